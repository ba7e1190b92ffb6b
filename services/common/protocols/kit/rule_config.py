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

from services.common.contracts import Protocol
from services.common.protocols.lumbar.consensus_rule import RULE_NAME as LUMBAR_RULE
from services.common.protocols.lumbar.consensus_rule import LumbarRule
from services.common.protocols.kit.decision import CXR_RULE, Decision, VoteView, decide_cxr

DEFAULT_RULES_FILE = Path(__file__).parents[3] / "consensus" / "rules.yaml"
_RULES = {CXR_RULE: decide_cxr}
_GRADING_RULES = {LUMBAR_RULE}  # decided cell by cell (services/consensus/lumbar_consensus.py)


@dataclass(frozen=True)
class RuleConfig:
    protocol: str
    rule: str
    version: str
    readers_per_study: int = 3
    min_agree_all: int = 2
    # lumbar-majority-median: cells whose readers are this many grades apart go to adjudication;
    # use_majority False decides every cell by the median.
    adjudication_spread: int = 2
    use_majority: bool = True

    def lumbar(self) -> LumbarRule:
        return LumbarRule(adjudication_spread=self.adjudication_spread, use_majority=self.use_majority)

    def describe(self) -> dict:
        """What a dataset card or report says about the rule: only the parameters it uses."""
        unused = {"min_agree_all"} if self.rule in _GRADING_RULES else {"adjudication_spread", "use_majority"}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in unused}


class RuleConfigError(ValueError):
    """The rules file is missing a protocol or names a rule the service does not implement."""


@cache
def load_rules(path: str | None = None) -> dict[str, RuleConfig]:
    """Every protocol's rule from the file (cached: the file is read once per process)."""
    raw = yaml.safe_load(Path(path or DEFAULT_RULES_FILE).read_text()) or {}
    rules = {}
    for protocol, spec in raw.items():
        Protocol(protocol)  # an unknown protocol name is a typo, not a new protocol
        config = RuleConfig(protocol=protocol, **spec)
        if config.rule not in _RULES and config.rule not in _GRADING_RULES:
            known = ", ".join([*_RULES, *_GRADING_RULES])
            raise RuleConfigError(f"{protocol}: unknown rule {config.rule!r}; known: {known}")
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
    """Apply the configured rule; the decision carries the configured name and version."""
    decision = _RULES[config.rule](votes, suggested, min_agree_all=config.min_agree_all,
                                   readers_per_study=len(votes))
    return dataclasses.replace(decision, rule=config.rule, rule_version=config.version)
