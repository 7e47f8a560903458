"""Text machinery around the engine: tokenizer, chat template, incremental detokenizer, stop strings, model dir."""

from dynamo_mono.preprocess.chat_template import ChatTemplate, TemplateError
from dynamo_mono.preprocess.detokenizer import IncrementalDetokenizer
from dynamo_mono.preprocess.model_dir import ModelInfo, load_model_dir
from dynamo_mono.preprocess.stop_strings import StopMatcher
from dynamo_mono.preprocess.tokenizer import Tokenizer

__all__ = [
    "ChatTemplate",
    "IncrementalDetokenizer",
    "ModelInfo",
    "StopMatcher",
    "TemplateError",
    "Tokenizer",
    "load_model_dir",
]
