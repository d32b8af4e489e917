"""Using a trained model: samplers (:mod:`.generate`), translation cross-entropy (:mod:`.evaluate`),
decoded metrics, the generation output folder (:mod:`.translations`) and figures (:mod:`.figures`)."""
