"""Builds a stage's frozen settings dataclass from an effective config: each field is the config setting of the
same name in upper case (``patch_shape`` <- ``PATCH_SHAPE``), except nested settings objects given by name."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

Settings = TypeVar("Settings")


def settings_from_config(cls: type[Settings], cfg, **nested: Any) -> Settings:
    """``cls`` (a dataclass) with every field read from ``cfg`` (config.py with ``--set``, or a loaded config),
    ``nested`` (field name -> an already built settings object) taking the place of the fields it names."""
    return cls(**{field.name: nested[field.name] if field.name in nested else getattr(cfg, field.name.upper())
                  for field in dataclasses.fields(cls)})
