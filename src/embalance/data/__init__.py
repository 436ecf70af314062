"""Data stages: reading datasets (prepare), the sentence encoder and its embeddings (embed)."""
