"""Runs llama.cpp's convert_hf_to_gguf.py with two fixes for BERT-family
cross-encoders (`*ForSequenceClassification` checkpoints, which the converter
recognises by their `id2label`):

1. The GGUF declares rank pooling (`<arch>.pooling_type` = 4), so the model is
   served as a reranker. The converter declares none for them (llama-server
   needs `--reranking` at run time instead).
2. A `BertForSequenceClassification`'s pooler (`pooler.dense`, followed by
   tanh in transformers) is kept as llama.cpp's `cls` tensor, which its rank
   pooling applies before the classifier (`cls_out`). The converter drops the
   pooler of every BERT, so a converted BERT cross-encoder scored without it
   and disagreed with transformers.

Usage: python -c "<this file>" convert_hf_to_gguf.py ARGS...
"""

import os
import runpy
import sys

script = os.path.abspath(sys.argv[1])
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(script))

try:
    from conversion.bert import BertModel
    from conversion.base import gguf
except ImportError:  # another converter layout: run it unchanged
    BertModel = None

POOLER = ("pooler.dense.weight", "pooler.dense.bias")

if BertModel is not None:
    filter_tensors = BertModel.filter_tensors.__func__
    modify_tensors = BertModel.modify_tensors
    try_set_pooling_type = BertModel._try_set_pooling_type

    def keep_pooler(cls, item):
        name = item[0][5:] if item[0].startswith("bert.") else item[0]
        if cls is BertModel and name in POOLER:
            return name, item[1]
        return filter_tensors(cls, item)

    def pooler_as_cls(self, data_torch, name, bid):
        if name in POOLER:
            if type(self) is not BertModel or not self.cls_out_labels:
                return
            name = "classifier.dense." + name.rsplit(".", 1)[1]
        yield from modify_tensors(self, data_torch, name, bid)

    def rank_pooling(self):
        if not getattr(self, "cls_out_labels", None):
            return try_set_pooling_type(self)
        self.gguf_writer.add_pooling_type(gguf.PoolingType.RANK)
        if (classifier_pooling := self.hparams.get("classifier_pooling")) is not None:
            modes = {"cls": gguf.PoolingType.CLS, "mean": gguf.PoolingType.MEAN}
            if classifier_pooling not in modes:
                raise NotImplementedError(f"Unsupported classifier_pooling: {classifier_pooling}")
            self.gguf_writer.add_classifier_pooling_type(modes[classifier_pooling])

    BertModel.filter_tensors = classmethod(keep_pooler)
    BertModel.modify_tensors = pooler_as_cls
    BertModel._try_set_pooling_type = rank_pooling

runpy.run_path(script, run_name="__main__")
