"""Rate limits, token limits, concurrency caps, budgets and spend (issue 15).

One concept per module: :mod:`windows` (window and period arithmetic), :mod:`estimate` (the
token reservation), :mod:`pricing` (prices, usage, cost), :mod:`store` (the store protocol),
:mod:`memory_store` and :mod:`redis_store` (where counters live), :mod:`stores` (the app's
stores across reloads), :mod:`limiter` (the policy: which limits apply, admit), :mod:`ticket` (one request's
reservations: attempt, settle), :mod:`exceeded` (the 429 and the ``x-ratelimit-*`` headers).
"""

from vte_proxy.limits.estimate import Estimate, estimate
from vte_proxy.limits.exceeded import LimitExceeded
from vte_proxy.limits.limiter import Limiter, Observer
from vte_proxy.limits.pricing import PriceBook, Usage
from vte_proxy.limits.stores import Stores
from vte_proxy.limits.ticket import Ticket

__all__ = ["Estimate", "LimitExceeded", "Limiter", "Observer", "PriceBook", "Stores", "Ticket", "Usage", "estimate"]
