"""CRM associations v4: batch create, archive and read between records of two object types.

Endpoints (https://developers.hubspot.com/docs/api-reference/crm-associations-v4/guide, "Associate
records" / "Retrieve associated records" / "Remove associations"; the hubspot-api-client SDK's
``crm.associations.v4.BatchApi`` calls the same paths)::

    POST /crm/v4/associations/{fromObjectType}/{toObjectType}/batch/create
         {"inputs": [{"from": {"id"}, "to": {"id"}, "types": [{"associationCategory", "associationTypeId"}]}]}
         → 201 {"status": "COMPLETE", "results": [{"fromObjectTypeId", "fromObjectId", "toObjectTypeId",
           "toObjectId", "labels"}]}; 207 with "errors" when some inputs name a record that does not exist
    POST .../batch/archive   {"inputs": [{"from": {"id"}, "to": [{"id"}]}]} → 204 (every type of each pair)
    POST .../batch/read      {"inputs": [{"id"}]} → 200 {"results": [{"from": {"id"}, "to": [{"toObjectId",
           "associationTypes": [{"category", "typeId", "label"}]}]}]}

    GET  /crm/v4/associations/{fromObjectType}/{toObjectType}/labels
         → 200 {"results": [{"category", "typeId", "label"}]} (every type of the direction, the
           HUBSPOT_DEFINED ones with it; schema ``DefinitionsApi.get_all`` of hubspot-api-client)
    POST .../labels   {"label", "name", "inverseLabel"?} → 200 {"results": [{"category": "USER_DEFINED",
           "typeId", "label"}, ...]} (API reference "Create association label",
           https://developers.hubspot.com/docs/api-reference/crm-associations-schema-v4/definitions/post-crm-associations-v4-fromObjectType-toObjectType-labels)
    POST .../batch/labels/archive  {"inputs": [{"from": {"id"}, "to": {"id"}, "types": [...]}]} → 204
           (removes those types, the association stays; the SDK's ``BatchApi.archive_labels``)

Rules emulated:

* associations are stored once and read from both sides: a contact→company pair is also the
  company→contact pair, with the inverse type ids (the type id table of the guide, "Association type
  id values": contact→company 279 unlabeled / 1 primary, company→contact 280 / 2, deal→contact 3,
  contact→deal 4, deal→company 341 / 5 primary, company→deal 342 / 6).
* a record has at most one *primary* company: associating another company as primary moves the
  primary label there (the guide, "Set a primary company": "the previous primary company will become
  an unlabeled association").
* a labeled association also carries the unlabeled type (guess: the guide shows labeled pairs
  listed with the unlabeled type beside the label).
* a custom (USER_DEFINED) label is one type per direction: creating it answers both type ids, the
  asked direction's first (guess: the v4 guide's "Create and manage association types" example,
  not re-checked here, answers two USER_DEFINED results for one label; the reference shows one
  result, of unspecified order). Guess: new type ids count up from :data:`FIRST_USER_TYPE`; a
  second label with a name the pair already has is refused 400 VALIDATION_ERROR (the reference
  says ``name`` is "the unique identifier for the association definition"; the error shape is not
  documented).
* a pair associated with a label carries the unlabeled type too (the rule below), so removing the
  label (``batch/labels/archive``) leaves it associated, unlabeled; removing the unlabeled type
  removes every label too (guess: the labels-archive reference, as quoted by integrators: "Deleting
  an unlabeled association will also delete all labeled associations between those two objects").
* batch read takes at most 1,000 inputs (developer changelog "Bug Fix: Batch Read Limit for HubSpot
  Associations API", effective 2025-02-10: larger requests are rejected).
* batch read answers, per input, one page of its associations; ``paging.next.after`` is present
  only when more follow, and the input sent again with that ``after`` reads the next page
  (https://developers.hubspot.com/docs/api-reference/legacy/crm/associations/associate-records/batch/get-associations:
  "The 'paging' field will only be present if there are more pages and absent otherwise"). Guess: a
  page holds :data:`READ_PAGE` (500) associations — the reference names no figure; 500 is the
  ``limit`` maximum of the single-record v4 list endpoint.
* guess: batch create/archive take at most 2,000 inputs (Workato's HubSpot batch-associate action
  documents 2,000 as the request maximum; HubSpot's guide names no figure).
* an association change does not move the records' ``lastmodifieddate``/``hs_lastmodifieddate``
  (guess, from integrators' reports — airbytehq/airbyte#27199 "Engagement Associations not updated"
  and #14390: incremental syncs miss association-only changes; HubSpot's docs say neither way —
  which is why crmhub re-reads associations itself: :mod:`workflows.reverse_links`).
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.hubspot.errors import ApiError
from sandbox.hubspot.schema import ObjectType, object_type
from sandbox.records import RecordStore

__all__ = ["ASSOCIATION_TYPES", "PRIMARY", "Associations"]

READ_LIMIT = 1_000
READ_PAGE = 500  # guess: see the module docstring
WRITE_LIMIT = 2_000  # guess: see the module docstring
FIRST_USER_TYPE = 1_000  # guess: see the module docstring

# (from, to) → {type id: label}; the first id of each pair is the unlabeled type.
ASSOCIATION_TYPES: dict[tuple[str, str], dict[int, str | None]] = {
    ("contacts", "companies"): {279: None, 1: "Primary"},
    ("companies", "contacts"): {280: None, 2: "Primary"},
    ("deals", "contacts"): {3: None},
    ("contacts", "deals"): {4: None},
    ("deals", "companies"): {341: None, 5: "Primary"},
    ("companies", "deals"): {342: None, 6: "Primary"},
}
PRIMARY = {("contacts", "companies"): 1, ("deals", "companies"): 5}
_INVERSE = {279: 280, 1: 2, 3: 4, 341: 342, 5: 6}
_INVERSE |= {v: k for k, v in _INVERSE.items()}

_Inner = Callable[[Request], Awaitable[Response]]
_Api = Callable[[str, _Inner], Callable[[Request], Awaitable[Response]]]


def _now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Associations:
    """The portal's associations: ``(from type, from id, to type, to id) → type ids``, kept in one
    canonical direction per object pair (the first of the pair in :data:`ASSOCIATION_TYPES` order)."""

    def __init__(self, store: RecordStore) -> None:
        self.store = store
        self.lock = threading.Lock()
        self._pairs: dict[tuple[str, str, str, str], set[int]] = {}
        # USER_DEFINED labels: (from, to) → {type id: (name, label)}; their inverse type ids.
        self._labels: dict[tuple[str, str], dict[int, tuple[str, str]]] = {}
        self._inverse: dict[int, int] = dict(_INVERSE)
        self._next_type = FIRST_USER_TYPE

    def types(self, f: str, t: str) -> dict[int, str | None]:
        """Every association type id from ``f`` to ``t`` with its label (the unlabeled one first)."""
        with self.lock:
            return ASSOCIATION_TYPES.get((f, t), {}) | {
                x: lb for x, (_, lb) in self._labels.get((f, t), {}).items()
            }

    def create_label(
        self, f: str, t: str, name: str, label: str, inverse: str | None = None
    ) -> tuple[int, int]:
        """A USER_DEFINED label between two object types: (type id ``f``→``t``, inverse type id)."""
        if (f, t) not in ASSOCIATION_TYPES:
            raise ApiError(400, "VALIDATION_ERROR", f"{f} cannot be associated with {t}")
        with self.lock:
            taken = {n for d in ((f, t), (t, f)) for n, _ in self._labels.get(d, {}).values()}
            if name in taken:
                raise ApiError(400, "VALIDATION_ERROR", f"an association label named {name!r} already exists")
            there, back = self._next_type, self._next_type + 1
            self._next_type += 2
            self._labels.setdefault((f, t), {})[there] = (name, label)
            self._labels.setdefault((t, f), {})[back] = (name, inverse or label)
            self._inverse |= {there: back, back: there}
        return there, back

    def unlabel(self, f: str, fid: str, t: str, tid: str, type_ids: Sequence[int]) -> None:
        """Remove types from a pair; the unlabeled type removes the pair (every label with it)."""
        if next(iter(ASSOCIATION_TYPES.get((f, t), {0: None}))) in type_ids:
            self.remove(f, fid, t, tid)
            return
        key, canon = self._canonical(f, fid, t, tid, set(type_ids))
        with self.lock:
            if key in self._pairs:
                self._pairs[key] -= canon

    # -- Python handle ---------------------------------------------------------------------------

    def _canonical(
        self, f: str, fid: str, t: str, tid: str, types: set[int]
    ) -> tuple[tuple[str, str, str, str], set[int]]:
        order = list(ASSOCIATION_TYPES)
        if order.index((f, t)) <= order.index((t, f)):
            return (f, fid, t, tid), types
        return (t, tid, f, fid), {self._inverse.get(x, x) for x in types}

    def associate(self, f: str, fid: str, t: str, tid: str, type_ids: Sequence[int]) -> None:
        """Associate two records with ``type_ids`` (as seen from ``f``); a primary moves here."""
        allowed = self.types(f, t)
        if not allowed:
            raise ApiError(400, "VALIDATION_ERROR", f"{f} cannot be associated with {t}")
        bad = [x for x in type_ids if x not in allowed]
        if bad:
            raise ApiError(
                400, "VALIDATION_ERROR", f"association type ids {bad} do not exist between {f} and {t}"
            )
        types = set(type_ids) | {next(iter(allowed))}
        primary = PRIMARY.get((f, t))
        with self.lock:
            if primary is not None and primary in types:  # the previous primary becomes unlabeled
                for other in self._view(f, fid, t):
                    k, kt = self._canonical(f, fid, t, other, {primary})
                    self._pairs[k] -= kt
            key, canon = self._canonical(f, fid, t, tid, types)
            self._pairs.setdefault(key, set()).update(canon)

    def _view(self, f: str, fid: str, t: str) -> list[str]:
        """Ids of the ``t`` records associated with ``f`` record ``fid`` (the lock held)."""
        out = []
        for a, aid, b, bid in self._pairs:
            if (a, aid, b) == (f, fid, t):
                out.append(bid)
            elif (b, bid, a) == (f, fid, t):
                out.append(aid)
        return out

    def remove(self, f: str, fid: str, t: str, tid: str) -> bool:
        """Remove every association type between two records."""
        key, _ = self._canonical(f, fid, t, tid, set())
        with self.lock:
            return self._pairs.pop(key, None) is not None

    def of(self, f: str, fid: str, t: str) -> dict[str, set[int]]:
        """``to id → type ids`` (as seen from ``f``) of one record."""
        out: dict[str, set[int]] = {}
        with self.lock:
            for (a, aid, b, bid), types in self._pairs.items():
                if (a, aid, b) == (f, fid, t):
                    out[bid] = set(types)
                elif (b, bid, a) == (f, fid, t):
                    out[aid] = {self._inverse.get(x, x) for x in types}
        return out

    def pairs(self, f: str, t: str) -> set[tuple[str, str]]:
        """Every associated ``(from id, to id)`` between two object types (whole-state checks)."""
        out: set[tuple[str, str]] = set()
        with self.lock:
            for a, aid, b, bid in self._pairs:
                if (a, b) == (f, t):
                    out.add((aid, bid))
                elif (b, a) == (f, t):
                    out.add((bid, aid))
        return out

    # -- HTTP -----------------------------------------------------------------------------------

    def routes(self, api: _Api) -> list[BaseRoute]:
        base = "/crm/v4/associations/{fromObjectType}/{toObjectType}/batch"
        labels = "/crm/v4/associations/{fromObjectType}/{toObjectType}/labels"
        return [
            Route(labels, api("hs.associations.labels", self._list_labels), methods=["GET"]),
            Route(labels, api("hs.associations.label", self._create_label), methods=["POST"]),
            Route(f"{base}/labels/archive", api("hs.associations.unlabel", self._unlabel), methods=["POST"]),
            Route(f"{base}/create", api("hs.associations.create", self._create), methods=["POST"]),
            Route(f"{base}/archive", api("hs.associations.archive", self._archive), methods=["POST"]),
            Route(f"{base}/read", api("hs.associations.read", self._read), methods=["POST"]),
        ]

    @staticmethod
    def _types(request: Request) -> tuple[ObjectType, ObjectType]:
        f = object_type(str(request.path_params["fromObjectType"]))
        t = object_type(str(request.path_params["toObjectType"]))
        if f is None or t is None or (f.name, t.name) not in ASSOCIATION_TYPES:
            raise ApiError(400, "VALIDATION_ERROR", "unknown object type pair for associations")
        return f, t

    @staticmethod
    async def _inputs(request: Request, limit: int) -> list[Mapping[str, Any]]:
        try:
            body = await request.json()
        except ValueError:
            raise ApiError(400, "VALIDATION_ERROR", "Invalid input JSON on line 1") from None
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list) or not all(isinstance(i, dict) for i in inputs):
            raise ApiError(400, "VALIDATION_ERROR", "inputs must be a list of objects")
        if len(inputs) > limit:
            raise ApiError(400, "VALIDATION_ERROR", f"Batch input limit is {limit}; got {len(inputs)} inputs")
        return inputs

    def _exists(self, ot: ObjectType, rid: str) -> bool:
        return rid.isdigit() and self.store.get(ot.name, rid) is not None

    @staticmethod
    def _id(value: Any) -> str:
        return str(value.get("id", "")) if isinstance(value, dict) else ""

    async def _create(self, request: Request) -> Response:
        f, t = self._types(request)
        inputs = await self._inputs(request, WRITE_LIMIT)
        started = _now_iso()
        results: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for item in inputs:
            fid, tid = self._id(item.get("from")), self._id(item.get("to"))
            types = _type_ids(item)
            if any(x.get("associationCategory") != _category(int(str(x.get("associationTypeId"))))
                   for x in item.get("types") or [] if isinstance(x, dict)
                   and str(x.get("associationTypeId")).isdigit()):  # fmt: skip
                types = []  # guess: a type id under the other category is no type of the pair
            missing = [i for ot, i in ((f, fid), (t, tid)) if not self._exists(ot, i)]
            if missing or not types:
                # guess: the error shape of a batch/create naming a record that does not exist
                errors.append(
                    {
                        "status": "error",
                        "category": "VALIDATION_ERROR" if missing else "INVALID_TYPE",
                        "message": "record does not exist" if missing else "no association types given",
                        "context": {"fromObjectId": [fid], "toObjectId": [tid]},
                    }
                )
                continue
            self.associate(f.name, fid, t.name, tid, types)
            labels = [self.types(f.name, t.name).get(x) for x in types]
            results.append(
                {
                    "fromObjectTypeId": f.type_id, "fromObjectId": int(fid),
                    "toObjectTypeId": t.type_id, "toObjectId": int(tid),
                    "labels": [label for label in labels if label],
                }
            )  # fmt: skip
        body: dict[str, Any] = {"status": "COMPLETE", "results": results, "startedAt": started,
                                "completedAt": _now_iso()}  # fmt: skip
        if errors:
            body |= {"errors": errors, "numErrors": len(errors)}
        return JSONResponse(body, status_code=207 if errors else 201)

    async def _archive(self, request: Request) -> Response:
        f, t = self._types(request)
        for item in await self._inputs(request, WRITE_LIMIT):
            fid = self._id(item.get("from"))
            for to in item.get("to") or []:
                self.remove(f.name, fid, t.name, self._id(to))
        return Response(status_code=204)

    async def _unlabel(self, request: Request) -> Response:
        f, t = self._types(request)
        for item in await self._inputs(request, WRITE_LIMIT):
            self.unlabel(
                f.name, self._id(item.get("from")), t.name, self._id(item.get("to")), _type_ids(item)
            )
        return Response(status_code=204)

    def _label_results(self, f: str, t: str, ids: Sequence[int]) -> list[dict[str, Any]]:
        types = self.types(f, t) | self.types(t, f)
        return [{"category": _category(x), "typeId": x, "label": types.get(x)} for x in ids]

    async def _list_labels(self, request: Request) -> Response:
        f, t = self._types(request)
        return JSONResponse(
            {"results": self._label_results(f.name, t.name, list(self.types(f.name, t.name)))}
        )

    async def _create_label(self, request: Request) -> Response:
        f, t = self._types(request)
        try:
            body = await request.json()
        except ValueError:
            raise ApiError(400, "VALIDATION_ERROR", "Invalid input JSON on line 1") from None
        name, label = (body.get(k) if isinstance(body, dict) else None for k in ("name", "label"))
        if not (isinstance(name, str) and name.strip() and isinstance(label, str) and label.strip()):
            raise ApiError(400, "VALIDATION_ERROR", "label and name are required strings")
        inverse = body.get("inverseLabel")
        ids = self.create_label(f.name, t.name, name, label, inverse if isinstance(inverse, str) else None)
        return JSONResponse({"results": self._label_results(f.name, t.name, ids)})

    async def _read(self, request: Request) -> Response:
        f, t = self._types(request)
        inputs = await self._inputs(request, READ_LIMIT)
        started = _now_iso()
        labels = self.types(f.name, t.name)
        results: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for item in inputs:
            fid = self._id(item)
            found = self.of(f.name, fid, t.name)
            if not found:
                # guess: HubSpot lists an input without associations as a NO_ASSOCIATIONS_FOUND error
                errors.append({"status": "error", "category": "NO_ASSOCIATIONS_FOUND",
                               "message": f"No {t.name} is associated with {f.name} {fid}.",
                               "context": {"fromObjectId": [fid]}})  # fmt: skip
                continue
            after = str(item.get("after") or "0")
            start = int(after) if after.isdigit() else 0
            ordered = sorted(found.items(), key=lambda kv: int(kv[0]))
            to = [
                {
                    "toObjectId": int(tid),
                    "associationTypes": [
                        {"category": _category(x), "typeId": x, "label": labels.get(x)} for x in sorted(types)
                    ],
                }
                for tid, types in ordered[start : start + READ_PAGE]
            ]
            result: dict[str, Any] = {"from": {"id": fid}, "to": to}
            if start + READ_PAGE < len(ordered):
                result["paging"] = {"next": {"after": str(start + READ_PAGE), "link": None}}
            results.append(result)
        body: dict[str, Any] = {"status": "COMPLETE", "results": results, "startedAt": started,
                                "completedAt": _now_iso()}  # fmt: skip
        if errors:
            body |= {"errors": errors, "numErrors": len(errors)}
        return JSONResponse(body, status_code=207 if errors else 200)


def _category(type_id: int) -> str:
    return "USER_DEFINED" if type_id >= FIRST_USER_TYPE else "HUBSPOT_DEFINED"


def _type_ids(item: Mapping[str, Any]) -> list[int]:
    """The ``associationTypeId`` of each of an input's ``types``."""
    return [
        int(x.get("associationTypeId", 0))
        for x in item.get("types") or []
        if isinstance(x, dict) and str(x.get("associationTypeId", "")).isdigit()
    ]
