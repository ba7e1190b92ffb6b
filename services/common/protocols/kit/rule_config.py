"""Consensus rules per protocol, read from a versioned YAML file (`rules.yaml` by default).

The rule's parameters live in configuration rather than code so that a curation team can tighten
or relax a rule without a release of the service; the version in the file is what every decision
records, so old decisions stay explained by the rule that made them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from services.common import protocols
from services.common.protocols.kit.decision import Decision, VoteView, decide_cxr

# The consensus service's rules file (a data file it owns; `RADCURATE_CONSENSUS_RULES_FILE` overrides it).
DEFAULT_RULES_FILE = Path(__file__).parents[3] / "consensus" / "rules.yaml"
# Parameters only some rules use: a card or report shows a rule's own parameters, not the others'.
_RULE_PARAMETERS = {"min_agree_all", "adjudication_spread", "use_majority"}


@dataclass(frozen=True)
class RuleConfig:
    protocol: str
    rule: str
    version: str
    readers_per_study: int = 3
    min_agree_all: int = 2
    # Grid rules (e.g. majority-median per cell): cells whose readers are this many grades apart
    # go to adjudication; use_majority False decides every cell by the median.
    adjudication_spread: int = 2
    use_majority: bool = True

    def describe(self) -> dict:
        """What a dataset card or report says about the rule: only the parameters it uses."""
        used = protocols.get(self.protocol).rule_parameters
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in _RULE_PARAMETERS - used}


class RuleConfigError(ValueError):
    """The rules file is missing a protocol or names a rule the service does not implement."""


@cache
def load_rules(path: str | None = None) -> dict[str, RuleConfig]:
    """Every protocol's rule from the file (cached: the file is read once per process)."""
    raw = yaml.safe_load(Path(path or DEFAULT_RULES_FILE).read_text()) or {}
    rules = {}
    for protocol, spec in raw.items():
        try:  # an unknown protocol name is a typo (or a plug-in not loaded), not a new protocol
            implemented = protocols.get(protocol).rules
        except protocols.UnknownProtocol as exc:
            raise RuleConfigError(str(exc)) from None
        config = RuleConfig(protocol=protocol, **spec)
        if config.rule not in implemented:
            raise RuleConfigError(f"{protocol}: unknown rule {config.rule!r}; known: {', '.join(sorted(implemented))}")
        if not str(config.version).strip():
            raise RuleConfigError(f"{protocol}: the rule needs a version")
        rules[protocol] = dataclasses.replace(config, version=str(config.version))
    return rules


def rule_for(protocol: str, path: str | None = None) -> RuleConfig:
    rules = load_rules(path)
    if protocol not in rules:
        raise RuleConfigError(f"no consensus rule configured for protocol {protocol!r}")
    return rules[protocol]


def decide(config: RuleConfig, votes: Sequence[VoteView], suggested: Sequence[str]) -> Decision:
    """Apply the configured verdict rule; the decision carries the configured name and version."""
    decision = decide_cxr(votes, suggested, min_agree_all=config.min_agree_all, readers_per_study=len(votes))
    return with_rule(decision, config)


def with_rule(decision: Decision, config: RuleConfig) -> Decision:
    """The decision stamped with the configured rule name and version (what every decision records)."""
    return dataclasses.replace(decision, rule=config.rule, rule_version=config.version)
