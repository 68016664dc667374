"""The one error of the configuration."""

from __future__ import annotations


class ConfigError(Exception):
    """Bad configuration: one line per problem, each naming the key, never a secret."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
