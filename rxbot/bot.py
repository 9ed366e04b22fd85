"""databot's ``databot.bot`` import path: ``from databot.bot import Bot`` keeps working.

databot's ``Bot`` was the run façade that ``BotFrame`` replaced; here it is that façade.
"""
from __future__ import annotations

from .botframe import BotFrame as Bot

__all__ = ["Bot"]
