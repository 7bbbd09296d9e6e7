"""A real cross-encoder checkpoint, and its reference scores.

Usage: rerank_reference.py MINILM_DIR OUT_DIR < pairs.json > scores.json

Builds `OUT_DIR`, a Hugging Face `BertForSequenceClassification` checkpoint
(one label) made of all-MiniLM-L6-v2's real encoder and pooler with a new
classifier head drawn with a fixed seed (unit normal, bias 0), plus the tokenizer files; then
prints, for the `[query, document]` pairs of stdin, the model's logits (the
raw relevance scores a cross-encoder gives, no sigmoid) as JSON
`{"exact": [...], "segment_a": [...]}`:

- `exact`: transformers on the pairs as its tokenizer encodes them (checked
  against sentence-transformers' CrossEncoder with identity activation);
- `segment_a`: the same with every token type 0 ("sentence A"), which is
  what llama.cpp's BERT graph computes (it hard-codes token type 0).
"""

import json
import shutil
import sys

import torch
import transformers
from sentence_transformers import CrossEncoder

TOKENIZER_FILES = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
]

src, out = sys.argv[1], sys.argv[2]
pairs = json.load(sys.stdin)
transformers.logging.set_verbosity_error()
torch.manual_seed(15)
model = transformers.BertForSequenceClassification.from_pretrained(src, num_labels=1)
# Drawn at unit scale (not the 0.02 of a fresh head) so the scores spread
# over a few units and their order means something at the test's tolerance.
with torch.no_grad():
    model.classifier.weight.copy_(torch.randn_like(model.classifier.weight))
    model.classifier.bias.zero_()
model.eval()
model.save_pretrained(out)
for name in TOKENIZER_FILES:
    try:
        shutil.copy(f"{src}/{name}", f"{out}/{name}")
    except FileNotFoundError:
        pass
tokenizer = transformers.AutoTokenizer.from_pretrained(out)
with torch.no_grad():
    batch = tokenizer(
        [q for q, _ in pairs], [d for _, d in pairs], padding=True, return_tensors="pt"
    )
    logits = model(**batch).logits[:, 0].tolist()
    batch["token_type_ids"] = torch.zeros_like(batch["token_type_ids"])
    segment_a = model(**batch).logits[:, 0].tolist()
ce = CrossEncoder(out, device="cpu", activation_fn=torch.nn.Identity())
st = ce.predict(pairs, convert_to_numpy=True).tolist()
worst = max(abs(a - b) for a, b in zip(logits, st))
assert worst < 1e-4, f"CrossEncoder and the model's logits differ by {worst}"
json.dump({"exact": logits, "segment_a": segment_a}, sys.stdout)
