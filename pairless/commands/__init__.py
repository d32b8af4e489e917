"""One module per ``pairless`` verb: argument parsing, the library call, printing; ``main(argv) -> int``."""
