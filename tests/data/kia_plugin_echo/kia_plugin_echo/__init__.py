"""A kia backend from outside kia: labels every axis with its first category, quoting the first sentence."""

from __future__ import annotations

from typing import Any

from kia.backends import BackendAnswer, ClaimedLabel
from kia.sentences import split_sentences


class EchoBackend:
    name = "echo"
    model = "echo-1"
    endpoint_host = None

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    def params(self) -> dict[str, Any]:
        return {"plugin": "echo"}

    def answer(self, doc: Any, taxonomy: Any, prompt: str) -> BackendAnswer:
        first = split_sentences(doc)[0].text
        labels = {axis.id: [ClaimedLabel(axis.categories[0].id, 0.5, "echo plugin", [first])] for axis in taxonomy.axes}
        return BackendAnswer(labels=labels, raw={"echo": True})


def create(settings: Any) -> EchoBackend:
    return EchoBackend(settings)
