"""rxbot's operators, one per module, each a curried ``(source) -> Observable`` whose
state lives in its subscription (RxPY's shape, ``reactivex/operators/_map.py``):

* :func:`pull_source` (``_pull_source``) — Loop/generator steps: pulled on demand;
  and :func:`trigger`, the pipe's one-item source;
* :func:`gated_ticker` (``_gated_ticker``) — Timer as a pulled source (fused build);
* :func:`gated_interval` (``_gated_interval``) — Timer as ``reactivex.timer`` ticks on the
  run's scheduler, held back by the downstream gate (unfused graph);
* :func:`bounded_map` (``_bounded_map``) — async steps with a fixed number of slots;
* :func:`fused_segment` (``_fused``) — a run of sync steps, with the all-sync routes
  among them, as one generated operator;
* :func:`route` (``_route``) — fan-out to branches and merge back (Branch, Fork, Join...)
  for routes with async steps;
* :func:`inline_route`, :func:`inline_blocked_join`, :class:`BlockedParts`
  (``_inline_route``) — a BlockedJoin's branches evaluated per item (routes nested in
  it, async steps awaited together), and the general path of a generated BlockedJoin;
* :func:`per_item_join` (``_per_item_join``) — BlockedJoin: every branch subscribed
  afresh per input (steps the evaluator does not run: boosted, timeouts, retries, Nodes);
* :func:`flatten` (``_flatten``) — the return-value rules after ``ops.map`` (unfused graph);
* :func:`publish_route`, :func:`fork_join_each` (``_publish_route``) — routes as
  ``publish`` + ``merge`` and BlockedJoin as per-item ``fork_join`` (unfused graph);
* :func:`rx_step` (``_rx_step``) — a user's raw Rx operator, its errors naming the step.
"""
from ._bounded_map import AsyncPlan, bounded_map
from ._flatten import FlattenPlan, flatten, guarded
from ._fused import FusedPlan, fused_segment
from ._publish_route import fork_join_each, publish_route
from ._gated_interval import TimerPlan, gated_interval
from ._gated_ticker import gated_ticker
from ._inline_route import BlockedParts, inline_blocked_join, inline_route, run_branch
from ._per_item_join import per_item_join, start_subflow
from ._pull_source import PullPlan, iterate, pull_source, trigger
from ._route import route
from ._rx_step import rx_step
from ._subscription import Operator, Subscription, fast_on_next, operator_of

__all__ = [
    "AsyncPlan", "FlattenPlan", "flatten", "guarded", "fork_join_each", "publish_route", "BlockedParts",
    "inline_blocked_join", "inline_route", "run_branch", "bounded_map", "FusedPlan", "fused_segment",
    "gated_interval", "gated_ticker", "TimerPlan", "per_item_join",
    "start_subflow", "PullPlan", "iterate", "pull_source", "trigger", "route", "rx_step", "Operator",
    "Subscription", "fast_on_next", "operator_of",
]
