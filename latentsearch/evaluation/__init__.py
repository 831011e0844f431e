"""Retrieval-quality evaluation: trec_eval-compatible metrics and a BEIR dataset reader.

``metrics`` scores a run against qrels (nDCG, MRR, MAP, recall, precision, ANN recall);
``datasets`` reads BEIR folders. Both are pure Python plus numpy; nothing heavy is imported here.
"""
