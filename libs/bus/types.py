"""The shapes of what services hand the bus: handlers, hooks and the type variables of generic calls."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from libs.schemas import Model, RpcRequest

D = TypeVar("D")  # what a handler needs: its service's deps
R = TypeVar("R", bound=Model)  # a reply model
Q = TypeVar("Q", bound=RpcRequest)  # a request model

# A message decoded by the type its header names, for a handler picked by that type. A consumer's
# `handlers` map pairs each model class with a handler of exactly that class; Python's types cannot
# tie a map's value to its key, so this one name stands for "the model of its key".
Decoded = Any

Handler = Callable[[Decoded, D], Awaitable[None]]
ExhaustedHook = Callable[[Decoded, BaseException, D], Awaitable[None]]
BatchHandler = Callable[[list[Decoded], D], Awaitable[None]]  # the decoded messages, in stream order
RpcHandler = Callable[[Q, D], Awaitable[Model]]
