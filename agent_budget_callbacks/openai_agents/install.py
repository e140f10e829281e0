"""Attaching a budget to a run: a wrapping ``ModelProvider`` and a ``RunConfig`` helper."""

from __future__ import annotations

import dataclasses
from typing import Any

from agents import Model, ModelProvider, RunConfig

from .handler import BudgetHooks, BudgetModel
from .payload import model_name

__all__ = ["BudgetModelProvider", "budget_run_config"]


class BudgetModelProvider(ModelProvider):
    """A ``ModelProvider`` whose models are :class:`BudgetModel` wrappers over the models of
    ``provider`` (the SDK's default ``MultiProvider`` when None), all feeding ``hooks``."""

    def __init__(self, hooks: BudgetHooks, provider: ModelProvider | None = None) -> None:
        if not isinstance(hooks, BudgetHooks):
            raise TypeError(f"hooks must be a BudgetHooks, got {type(hooks).__name__}")
        if provider is None:
            from agents import MultiProvider

            provider = MultiProvider()
        self.hooks = hooks
        self.provider = provider

    def get_model(self, model_name_: str | None) -> Model:
        model = self.provider.get_model(model_name_)
        if isinstance(model, BudgetModel) and model.hooks is self.hooks:
            return model
        return BudgetModel(model, self.hooks, name=model_name(model) or model_name_)

    async def aclose(self) -> None:
        await self.provider.aclose()

    def __repr__(self) -> str:
        return f"BudgetModelProvider({self.hooks!r}, {self.provider!r})"


def budget_run_config(hooks: BudgetHooks, run_config: RunConfig | None = None) -> RunConfig:
    """A copy of ``run_config`` (or a new ``RunConfig``) that routes every model call of the
    run through ``hooks``: its ``model_provider`` is wrapped in a
    :class:`BudgetModelProvider`, and a ``Model`` object given as its ``model`` in a
    :class:`BudgetModel`. An agent whose own ``model`` is a ``Model`` object bypasses the
    provider: wrap that one with ``hooks.wrap(model)``.
    """
    config = run_config if run_config is not None else RunConfig()
    if not isinstance(config, RunConfig):
        raise TypeError(f"run_config must be a RunConfig, got {type(config).__name__}")
    changes: dict[str, Any] = {}
    provider = config.model_provider
    if not (isinstance(provider, BudgetModelProvider) and provider.hooks is hooks):
        changes["model_provider"] = BudgetModelProvider(hooks, provider)
    if isinstance(config.model, Model) and not (
        isinstance(config.model, BudgetModel) and config.model.hooks is hooks
    ):
        changes["model"] = hooks.wrap(config.model)
    return dataclasses.replace(config, **changes) if changes else config
