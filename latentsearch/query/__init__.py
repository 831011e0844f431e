"""The read path: queries become vectors, FAISS ids become hits."""
