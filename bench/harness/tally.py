"""The soak's counts: requests by outcome, unexpected outcomes by kind (each with a count and its
first example), the requests in flight now, and how the requests started while Redis was away fared.

Greenlets of one process update it; gevent switches only where they wait, never inside a method.
"""

import collections


class Tally:
    def __init__(self):
        self.outcomes = collections.Counter()
        self.unexpected = {}  # kind -> [count, first example]
        self.in_flight = 0
        self.redis_away = False  # set while Redis is killed
        self.while_away = collections.Counter()  # "requests", "unexpected": requests started while Redis was away

    def start(self) -> bool:
        """A request starts; True when Redis is away now."""
        self.in_flight += 1
        return self.redis_away

    def end(self, outcome: str, problem, example: str, redis_was_away: bool) -> None:
        """A request ended with `outcome`; `problem` (verdicts.Unexpected) when it was not expected."""
        self.in_flight -= 1
        self.outcomes[outcome] += 1
        if redis_was_away:
            self.while_away["requests"] += 1
            self.while_away["unexpected"] += problem is not None
        if problem is not None:
            self.note(problem.kind, f"{example}: {problem.detail}" if problem.detail else example)

    def note(self, kind: str, example: str) -> None:
        """Something unexpected (a request's answer, or what the soak saw of the servers)."""
        entry = self.unexpected.setdefault(kind, [0, example])
        entry[0] += 1

    @property
    def requests(self) -> int:
        return sum(self.outcomes.values())

    @property
    def unexpected_count(self) -> int:
        return sum(count for count, _example in self.unexpected.values())

    def line(self) -> str:
        """The progress line's counts."""
        answered = sum(n for outcome, n in self.outcomes.items() if outcome.startswith("answered"))
        faults = sum(n for outcome, n in self.outcomes.items() if outcome.startswith("fault"))
        limited = sum(n for outcome, n in self.outcomes.items() if outcome.startswith("429"))
        left = self.outcomes["left mid-stream (on purpose)"]
        return (f"{self.requests:,} requests: {answered:,} answered, {faults:,} faults as expected, {limited:,} limited, "
                f"{left:,} left; {self.unexpected_count:,} unexpected; {self.in_flight} in flight")
