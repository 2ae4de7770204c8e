"""`postroom doctor`: the troubleshooting steps an operator would take by hand, as checks.

Every plugin contributes checks through `postroom_doctor_checks`; each returns `Check`s.
"""
import dataclasses

STATUSES = ("ok", "warn", "fail")


@dataclasses.dataclass
class Check:
    """One finding: `status` is ok | warn | fail; `finding` and `remedy` are one line each."""
    name: str
    status: str
    finding: str
    remedy: str = ""

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"check status must be one of {STATUSES}, not {self.status!r}")
