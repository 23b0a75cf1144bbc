"""Build side of llamabin: turns a GGUF model into one self-launching executable."""
