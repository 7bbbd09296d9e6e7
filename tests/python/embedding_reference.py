"""Reference sentence embeddings for the conversion test, computed by
sentence-transformers from a Hugging Face checkpoint on the CPU, offline.

usage: embedding_reference.py CHECKPOINT_DIR POOLING < sentences.json > vectors.json
POOLING is `model` (the checkpoint's own modules: Transformer, Pooling,
Normalize) or a pooling mode (`cls`, `lasttoken`, `mean`) to build
Transformer → Pooling(mode) → Normalize from the same weights.
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from sentence_transformers import SentenceTransformer, models  # noqa: E402

checkpoint, pooling = sys.argv[1], sys.argv[2]
sentences = json.load(sys.stdin)
if pooling == "model":
    model = SentenceTransformer(checkpoint, device="cpu")
else:
    word = models.Transformer(checkpoint)
    pool = models.Pooling(word.get_word_embedding_dimension(), pooling_mode=pooling)
    model = SentenceTransformer(modules=[word, pool, models.Normalize()], device="cpu")
vectors = model.encode(sentences, normalize_embeddings=True, convert_to_numpy=True)
json.dump([v.tolist() for v in vectors], sys.stdout)
