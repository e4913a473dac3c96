"""The Python client of an attnserve server: imports the shared protocol layer, nothing of the server."""

from client.channel import RetryPolicy
from client.clients import (
    AsyncClient,
    Classification,
    Client,
    ClientError,
    Sentence,
    Sorted,
    Translation,
)
from runtime.attention_map import AttentionMap

__all__ = [
    "AsyncClient",
    "AttentionMap",
    "Classification",
    "Client",
    "ClientError",
    "RetryPolicy",
    "Sentence",
    "Sorted",
    "Translation",
]
