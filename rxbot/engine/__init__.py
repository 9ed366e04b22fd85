"""The tree -> reactivex compiler, flow control and error policies."""
from .context import RunContext, RunReport
from .runner import run_pipes

__all__ = ["RunContext", "RunReport", "run_pipes"]
