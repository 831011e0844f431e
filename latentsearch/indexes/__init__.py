"""FAISS indexes described by factory strings; see :mod:`.faiss_index`."""
