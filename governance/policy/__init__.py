"""Purpose limitation: processing instructions, transforms, plan checks, projection, type contract.

The controller's :class:`ProcessingInstruction` says what crmhub may do. Enforcement happens twice:

1. **Before a run** — :func:`check` rejects a :class:`SyncPlan` whose mapping or transforms read a
   field the instruction does not allow, whose transforms do not serve the instruction's purpose,
   or that runs outside the instruction's validity window. It raises :class:`PlanRefused` (a
   :class:`~schemas.errors.PurposeViolation`) whose ``reason`` dict is ready to be written as a
   lineage ``refusal`` event.
2. **On every record** — :func:`project` keeps only allowed fields *before* any transform sees
   them and replaces fields marked for pseudonymization with keyed pseudonyms; it reports what it
   withheld (names and counts, never values). :func:`apply_transforms` then gives each transform
   only the fields it declared it reads and keeps only the fields it declared it writes.

The field types a run saw at plan time are its contract: :func:`screen` holds back (quarantines) a
record whose allowed field carries a value that no longer fits its planned type (a number field now
carrying text, a date field a non-date, a checkbox a string), naming field, planned and observed
type — never the value. :func:`check_types` refuses the next run while a field it reads has another
type than the one accepted under the same instruction (the controller re-issues the instruction).

A pull does all of it for a page in one call: :meth:`PageProcessor.process` hashes the source ids,
screens, projects and pseudonymizes, applies the transforms and returns a :class:`GovernedPage`.

Error messages name fields, objects, transforms and purposes — never field values.

One concept a module, all imported from here (the modules are private, as in httpx):

=====================  ==========================================================================
``_instruction``       :class:`ProcessingInstruction`, :func:`load_instruction` (YAML, no duplicates)
``_transforms``        :class:`Transform`, :class:`TransformRegistry`, :func:`register_transform`,
                       :data:`default_registry`, :func:`apply_transforms`
``_plan``              :class:`SyncPlan`, :class:`PlanRefused`, :class:`CheckResult`, :func:`check`
``_projection``        :class:`Projection`, :func:`project` (compiled per-object allowlist)
``_contract``          :func:`value_kind`, :func:`fits`, :class:`Misfit`, :class:`Screening`,
                       :func:`screen`, :func:`check_types`
``_page``              :class:`PageProcessor` (one page's whole governance step in one call),
                       :class:`GovernedPage`, :class:`Quarantined`
=====================  ==========================================================================
"""

from governance.policy._contract import Misfit, Screening, check_types, fits, screen, value_kind
from governance.policy._instruction import ProcessingInstruction, load_instruction
from governance.policy._page import GovernedPage, PageProcessor, Quarantined
from governance.policy._plan import CheckResult, PlanRefused, SyncPlan, check
from governance.policy._projection import Projection, project
from governance.policy._transforms import (
    Transform,
    TransformRegistry,
    apply_transforms,
    default_registry,
    register_transform,
)
from schemas.connector import Record

__all__ = [
    "CheckResult",
    "GovernedPage",
    "Misfit",
    "PageProcessor",
    "PlanRefused",
    "ProcessingInstruction",
    "Projection",
    "Quarantined",
    "Record",
    "Screening",
    "SyncPlan",
    "Transform",
    "TransformRegistry",
    "apply_transforms",
    "check",
    "check_types",
    "default_registry",
    "fits",
    "load_instruction",
    "project",
    "register_transform",
    "screen",
    "value_kind",
]
