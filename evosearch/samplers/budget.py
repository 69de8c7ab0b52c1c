"""Token and cost accounting for LLM samplers, and the run budget (``--max-cost``, ``--max-tokens``).

A request reserves its worst case (every prompt byte a token, every answer at its
token limit) before it is sent, and settles to the usage the server reports when it
returns. A new request starts only if what was spent, plus the worst case of every
request in flight, plus its own worst case fits the budget; otherwise it waits for
requests in flight to settle (they usually use far less than their worst case) and
gives up only when none is left in flight. So the budget is never overshot, and near
its end the run slows down instead of stopping early.

Prices are USD per million tokens. Requests that fail without an answer are not
charged: providers do not bill 4xx/5xx answers, and what a timed-out request cost
the server cannot be known here.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self.input + tokens_out * self.output) / 1e6


FREE = Price(0.0, 0.0)

# List prices of a few hosted models, USD per 1M input/output tokens (standard tier, no caching or batch
# discounts), from OpenAI's pricing page (platform.openai.com/docs/pricing) as quoted by third-party
# summaries dated March-June 2026; not checked against OpenAI directly (no network here). Give your own
# with ``--prices`` (they take precedence), e.g. '{gpt-4o-mini: [0.15, 0.6]}'.
PRICES: dict[str, Price] = {
    "gpt-5": Price(1.25, 10.00),
    "gpt-5-mini": Price(0.25, 2.00),
    "gpt-5-nano": Price(0.05, 0.40),
    "gpt-4.1": Price(2.00, 8.00),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4o-mini": Price(0.15, 0.60),
    "o3": Price(2.00, 8.00),
    "o3-mini": Price(1.10, 4.40),
    "o4-mini": Price(1.10, 4.40),
}


def parse_prices(prices: dict | None) -> dict[str, Price]:
    """``{model: [input, output]}`` or ``{model: {input: .., output: ..}}`` (USD per 1M tokens)."""
    out = {}
    for model, value in (prices or {}).items():
        try:
            p = Price(**value) if isinstance(value, dict) else Price(*value)
            if not all(isinstance(v, (int, float)) and v >= 0 for v in (p.input, p.output)):
                raise TypeError
        except TypeError:
            raise ValueError(f"price of {model!r} must be [input, output] USD per 1M tokens (two numbers >= 0), "
                             f"not {value!r}") from None
        out[str(model)] = Price(float(p.input), float(p.output))
    return out


def find_price(model: str, overrides: dict[str, Price] | None = None, local: bool = False) -> Price | None:
    """The price of ``model``: an override, else free on a local endpoint, else the table.
    Names match exactly or as the longest prefix (dated snapshots such as "gpt-4o-mini-2024-07-18")."""
    def lookup(table: dict[str, Price]) -> Price | None:
        if model in table:
            return table[model]
        prefixes = [name for name in table if model.startswith(name + "-")]
        return table[max(prefixes, key=len)] if prefixes else None

    found = lookup(overrides or {})
    if found is None and local:
        return FREE
    return found if found is not None else lookup(PRICES)


class BudgetExhausted(Exception):
    """No new request fits the run budget. Not a sampler failure: the engine stops launching
    samples and leaves this one pending, so ``--resume`` with a larger budget continues it."""


@dataclass
class Reservation:
    tokens: int
    cost: float


class Budget:
    """Spent tokens and cost of one run, and the limits on them (None: no limit). Samplers price
    their requests themselves, so one budget can be shared by samplers of different models."""

    def __init__(self, max_cost: float | None = None, max_tokens: int | None = None):
        if max_cost is not None and max_cost <= 0 or max_tokens is not None and max_tokens <= 0:
            raise ValueError("budget limits must be positive")
        self.max_cost = max_cost
        self.max_tokens = max_tokens
        self.tokens_in = self.tokens_out = 0
        self.cost = 0.0
        self.requests = 0  # settled requests
        self.reserved_tokens = 0
        self.reserved_cost = 0.0
        self.in_flight = 0
        self.stop_reason: str | None = None  # set once a request did not fit with nothing in flight
        self._waiters: list[asyncio.Future] = []

    def _overshoot(self, tokens: int, cost: float) -> str | None:
        if self.max_tokens is not None and self.tokens_in + self.tokens_out + self.reserved_tokens + tokens > self.max_tokens:
            return (f"token budget reached: {self.tokens_in + self.tokens_out} of {self.max_tokens} tokens spent, "
                    f"the next request could use {tokens}")
        if self.max_cost is not None and self.cost + self.reserved_cost + cost > self.max_cost:
            return (f"cost budget reached: ${self.cost:.4f} of ${self.max_cost:g} spent, "
                    f"the next request could cost ${cost:.4f}")
        return None

    async def reserve(self, tokens: int, cost: float) -> Reservation:
        """Hold the worst case of one request (its tokens, prompt and answers, and their cost); wait
        while it does not fit and others are in flight. Raises BudgetExhausted when it does not fit
        with nothing in flight, and from then on."""
        while (reason := self.stop_reason or self._overshoot(tokens, cost)) is not None:
            if self.in_flight == 0 or self.stop_reason:
                self.stop_reason = reason
                raise BudgetExhausted(reason)
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
        self.in_flight += 1
        self.reserved_tokens += tokens
        self.reserved_cost += cost
        return Reservation(tokens, cost)

    def _release(self, r: Reservation) -> None:
        self.in_flight -= 1
        self.reserved_tokens -= r.tokens
        self.reserved_cost -= r.cost
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    def settle(self, r: Reservation, tokens_in: int, tokens_out: int, cost: float) -> None:
        """The request returned with this usage: charge it and free its reservation."""
        self.charge(tokens_in, tokens_out, cost)
        self._release(r)

    def cancel(self, r: Reservation) -> None:
        """The request failed without an answer: nothing is charged."""
        self._release(r)

    def charge(self, tokens_in: int, tokens_out: int, cost: float, requests: int = 1) -> None:
        """Add usage (also what a resumed run had spent before)."""
        self.tokens_in += tokens_in
        self.tokens_out += tokens_out
        self.cost += cost
        self.requests += requests

    def usage(self) -> dict:
        return {"tokens_in": self.tokens_in, "tokens_out": self.tokens_out, "cost": round(self.cost, 8),
                "requests": self.requests, "max_cost": self.max_cost, "max_tokens": self.max_tokens,
                "stop_reason": self.stop_reason}


class Meter:
    """A sampler's side of the budget: its model's price, and the run budget it charges (its own, or
    one shared with other samplers). ``price`` None: unknown, so its cost is not counted."""

    def __init__(self, price: Price | None, budget: Budget):
        if budget.max_cost is not None and price is None:
            raise ValueError("a cost limit needs the model's price")
        self.price = price
        self.budget = budget

    def cost(self, tokens_in: int, tokens_out: int) -> float | None:
        return None if self.price is None else self.price.cost(tokens_in, tokens_out)

    async def reserve(self, tokens_in: int, tokens_out: int) -> Reservation:
        return await self.budget.reserve(tokens_in + tokens_out, self.cost(tokens_in, tokens_out) or 0.0)

    def settle(self, r: Reservation, tokens_in: int, tokens_out: int) -> float | None:
        """Charge the request's usage; returns its cost."""
        cost = self.cost(tokens_in, tokens_out)
        self.budget.settle(r, tokens_in, tokens_out, cost or 0.0)
        return cost

    def usage(self) -> dict:
        """The budget's account (the run's, if shared), with this sampler's price."""
        return {**self.budget.usage(), **({"cost": None} if self.price is None else {}),
                "price_per_1m": None if self.price is None else [self.price.input, self.price.output]}


def worst_prompt_tokens(*texts: str) -> int:
    """An upper bound on the prompt tokens of a request: byte-level BPE and SentencePiece with
    byte fallback never make more tokens than UTF-8 bytes, plus room for chat-template markers."""
    return sum(len(t.encode("utf-8")) + 16 for t in texts) + 16
