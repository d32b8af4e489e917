"""Training: the loop (:mod:`.train`), its data order (:mod:`.data`), masking, fragmentation and the
audit (:mod:`.fragment`), the run folder (:mod:`.run`), checkpoints and the multi-process helpers."""
