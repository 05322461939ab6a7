"""What `hf-fcr demo` and the studio run: ERM training on the built-in data (erm), every method beside its
controls (compare) and the main job (main)."""
