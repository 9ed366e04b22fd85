"""The tree -> reactivex compiler, flow control and error policies."""
from .context import RunContext, RunReport
from .hooks import RunHooks, RunOutcome, StepFailure
from .runner import run_pipes

__all__ = ["RunContext", "RunReport", "RunHooks", "RunOutcome", "StepFailure", "run_pipes"]
