from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AttentionMap(_message.Message):
    __slots__ = ("rows", "cols", "weights")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    COLS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedScalarFieldContainer[str]
    cols: _containers.RepeatedScalarFieldContainer[str]
    weights: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, rows: _Optional[_Iterable[str]] = ..., cols: _Optional[_Iterable[str]] = ..., weights: _Optional[_Iterable[float]] = ...) -> None: ...

class TranslateRequest(_message.Message):
    __slots__ = ("model", "texts", "return_attention", "beam_size", "max_length", "backend")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    RETURN_ATTENTION_FIELD_NUMBER: _ClassVar[int]
    BEAM_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    model: str
    texts: _containers.RepeatedScalarFieldContainer[str]
    return_attention: bool
    beam_size: int
    max_length: int
    backend: str
    def __init__(self, model: _Optional[str] = ..., texts: _Optional[_Iterable[str]] = ..., return_attention: bool = ..., beam_size: _Optional[int] = ..., max_length: _Optional[int] = ..., backend: _Optional[str] = ...) -> None: ...

class Translation(_message.Message):
    __slots__ = ("text", "attention")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    ATTENTION_FIELD_NUMBER: _ClassVar[int]
    text: str
    attention: AttentionMap
    def __init__(self, text: _Optional[str] = ..., attention: _Optional[_Union[AttentionMap, _Mapping]] = ...) -> None: ...

class TranslateResponse(_message.Message):
    __slots__ = ("translations",)
    TRANSLATIONS_FIELD_NUMBER: _ClassVar[int]
    translations: _containers.RepeatedCompositeFieldContainer[Translation]
    def __init__(self, translations: _Optional[_Iterable[_Union[Translation, _Mapping]]] = ...) -> None: ...

class TranslateStreamResponse(_message.Message):
    __slots__ = ("step", "translations", "final")
    STEP_FIELD_NUMBER: _ClassVar[int]
    TRANSLATIONS_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    step: int
    translations: _containers.RepeatedCompositeFieldContainer[Translation]
    final: bool
    def __init__(self, step: _Optional[int] = ..., translations: _Optional[_Iterable[_Union[Translation, _Mapping]]] = ..., final: bool = ...) -> None: ...

class ClassifyRequest(_message.Message):
    __slots__ = ("model", "texts", "return_attention", "backend")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    RETURN_ATTENTION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    model: str
    texts: _containers.RepeatedScalarFieldContainer[str]
    return_attention: bool
    backend: str
    def __init__(self, model: _Optional[str] = ..., texts: _Optional[_Iterable[str]] = ..., return_attention: bool = ..., backend: _Optional[str] = ...) -> None: ...

class SentenceAttention(_message.Message):
    __slots__ = ("words", "word_weights", "weight")
    WORDS_FIELD_NUMBER: _ClassVar[int]
    WORD_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    words: _containers.RepeatedScalarFieldContainer[str]
    word_weights: _containers.RepeatedScalarFieldContainer[float]
    weight: float
    def __init__(self, words: _Optional[_Iterable[str]] = ..., word_weights: _Optional[_Iterable[float]] = ..., weight: _Optional[float] = ...) -> None: ...

class Classification(_message.Message):
    __slots__ = ("label", "probabilities", "sentences")
    class ProbabilitiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    SENTENCES_FIELD_NUMBER: _ClassVar[int]
    label: str
    probabilities: _containers.ScalarMap[str, float]
    sentences: _containers.RepeatedCompositeFieldContainer[SentenceAttention]
    def __init__(self, label: _Optional[str] = ..., probabilities: _Optional[_Mapping[str, float]] = ..., sentences: _Optional[_Iterable[_Union[SentenceAttention, _Mapping]]] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[Classification]
    def __init__(self, results: _Optional[_Iterable[_Union[Classification, _Mapping]]] = ...) -> None: ...

class IntList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, values: _Optional[_Iterable[int]] = ...) -> None: ...

class SortRequest(_message.Message):
    __slots__ = ("model", "values", "return_attention", "backend")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    RETURN_ATTENTION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    model: str
    values: _containers.RepeatedCompositeFieldContainer[IntList]
    return_attention: bool
    backend: str
    def __init__(self, model: _Optional[str] = ..., values: _Optional[_Iterable[_Union[IntList, _Mapping]]] = ..., return_attention: bool = ..., backend: _Optional[str] = ...) -> None: ...

class Sorted(_message.Message):
    __slots__ = ("order", "values", "attention")
    ORDER_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    ATTENTION_FIELD_NUMBER: _ClassVar[int]
    order: _containers.RepeatedScalarFieldContainer[int]
    values: _containers.RepeatedScalarFieldContainer[int]
    attention: AttentionMap
    def __init__(self, order: _Optional[_Iterable[int]] = ..., values: _Optional[_Iterable[int]] = ..., attention: _Optional[_Union[AttentionMap, _Mapping]] = ...) -> None: ...

class SortResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[Sorted]
    def __init__(self, results: _Optional[_Iterable[_Union[Sorted, _Mapping]]] = ...) -> None: ...
