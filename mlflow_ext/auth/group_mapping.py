"""What a single sign-on user's groups give: MLflow's admin flag and grants, and the platform's rights.

The mapping file (``MLFLOW_EXT_OIDC_GROUP_MAPPING``, YAML) names, per group, the same things an admin
grants by hand (``mlflow-ext grant permission`` / ``grant right``); nothing here is a second permission
system::

    groups:
      ml-admins:
        admin: true
      team-fraud:
        permissions:
          - {resource_type: registered_model, name: "fraud-*", permission: EDIT}
          - {resource_type: experiment, name: "fraud-*", permission: EDIT}
        rights:
          - {right: promote, model: "fraud-*"}
          - {right: create_registered_model}

``name`` is a glob over the names of the experiments or registered models that exist when the user signs
in (``*`` alone is MLflow's every-resource grant); ``model`` likewise for the promote right (``*`` or absent:
every model). Unknown groups give nothing. Applied at every sign-in: the admin flag follows the groups
(granted and withdrawn); rights that an earlier sign-in granted through the mapping and that the groups no
longer give are revoked. MLflow permissions are only added (revoke them with ``mlflow-ext grant revoke``).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlflow_ext import mlflow_internals
from mlflow_ext.auth.paths import RIGHTS

PERMISSIONS = ("READ", "USE", "EDIT", "MANAGE", "NO_PERMISSIONS")
RESOURCE_TYPES = ("experiment", "registered_model")
GRANTED_BY = "oidc-groups"


@dataclass(frozen=True)
class Permission:
    resource_type: str
    name: str
    permission: str


@dataclass(frozen=True)
class Right:
    right: str
    model: str = "*"


@dataclass(frozen=True)
class GroupGrants:
    admin: bool = False
    permissions: tuple[Permission, ...] = ()
    rights: tuple[Right, ...] = ()


@dataclass(frozen=True)
class GroupMapping:
    groups: dict[str, GroupGrants] = field(default_factory=dict)


@dataclass(frozen=True)
class Applied:
    admin: bool
    permissions: int
    rights: int


def parse(data: Any, source: str = "group mapping") -> GroupMapping:
    """Raises ValueError naming the problem's place in the file."""
    if data is None:
        return GroupMapping()
    if not isinstance(data, dict) or set(data) - {"groups"}:
        raise ValueError(f"{source}: expected a mapping with one key, groups")
    groups = data.get("groups") or {}
    if not isinstance(groups, dict):
        raise ValueError(f"{source}: groups must map group names to grants")
    parsed: dict[str, GroupGrants] = {}
    for name, entry in groups.items():
        where = f"{source}: group {name!r}"
        entry = entry or {}
        if not isinstance(entry, dict) or set(entry) - {"admin", "permissions", "rights"}:
            raise ValueError(f"{where}: expected keys admin, permissions, rights")
        if not isinstance(entry.get("admin", False), bool):
            raise ValueError(f"{where}: admin must be true or false")
        permissions = []
        for item in entry.get("permissions") or []:
            if not isinstance(item, dict) or set(item) != {"resource_type", "name", "permission"}:
                raise ValueError(f"{where}: a permission needs exactly resource_type, name, permission")
            if item["resource_type"] not in RESOURCE_TYPES:
                raise ValueError(f"{where}: resource_type must be one of {', '.join(RESOURCE_TYPES)}")
            if item["permission"] not in PERMISSIONS:
                raise ValueError(f"{where}: permission must be one of {', '.join(PERMISSIONS)}")
            permissions.append(Permission(item["resource_type"], str(item["name"]), item["permission"]))
        rights = []
        for item in entry.get("rights") or []:
            if not isinstance(item, dict) or "right" not in item or set(item) - {"right", "model"}:
                raise ValueError(f"{where}: a right needs right (and model, for promote)")
            if item["right"] not in RIGHTS:
                raise ValueError(f"{where}: right must be one of {', '.join(RIGHTS)}")
            if item["right"] != "promote" and item.get("model", "*") != "*":
                raise ValueError(f"{where}: model applies to the promote right only")
            rights.append(Right(item["right"], str(item.get("model", "*"))))
        parsed[str(name)] = GroupGrants(entry.get("admin", False), tuple(permissions), tuple(rights))
    return GroupMapping(parsed)


def load(path: str | None) -> GroupMapping:
    if path is None:
        return GroupMapping()
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ValueError(f"MLFLOW_EXT_OIDC_GROUP_MAPPING cannot be read ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ValueError("MLFLOW_EXT_OIDC_GROUP_MAPPING is not valid YAML") from None
    return parse(data, "MLFLOW_EXT_OIDC_GROUP_MAPPING")


def _model_names() -> list[str]:
    store = mlflow_internals.registry_store()
    names: list[str] = []
    token = None
    while True:
        page = store.search_registered_models(max_results=1000, page_token=token)
        names.extend(m.name for m in page)
        token = page.token
        if not token:
            return names


def _experiments() -> list[tuple[str, str]]:
    store = mlflow_internals.tracking_store()
    found: list[tuple[str, str]] = []
    token = None
    while True:
        page = store.search_experiments(max_results=1000, page_token=token)
        found.extend((e.experiment_id, e.name) for e in page)
        token = page.token
        if not token:
            return found


def _matching(kind: str, pattern: str, cache: dict[str, list[tuple[str, str]]]) -> list[str]:
    """Resource ids (experiment ids, model names) whose names match ``pattern``; ``*`` stays ``*``."""
    if pattern == "*":
        return ["*"]
    if kind not in cache:
        cache[kind] = _experiments() if kind == "experiment" else [(n, n) for n in _model_names()]
    return [rid for rid, name in cache[kind] if fnmatch.fnmatchcase(name, pattern)]


def apply(mapping: GroupMapping, groups: set[str], username: str, users: Any, ext: Any) -> Applied:
    """Give ``username`` what ``groups`` map to; returns what was applied."""
    grants = [mapping.groups[g] for g in sorted(groups) if g in mapping.groups]
    admin = any(g.admin for g in grants)
    if users.get_user(username).is_admin != admin:
        users.update_user(username, is_admin=admin)
    cache: dict[str, list[tuple[str, str]]] = {}
    permissions = 0
    for grant in grants:
        for p in grant.permissions:
            for resource_id in _matching(p.resource_type, p.name, cache):
                users.grant_user_permission(username, p.resource_type, resource_id, p.permission)
                permissions += 1
    wanted: set[tuple[str, str]] = set()
    for grant in grants:
        for r in grant.rights:
            if r.right != "promote":
                wanted.add((r.right, "*"))
            else:
                wanted.update(("promote", name) for name in _matching("registered_model", r.model, cache))
    for right, resource in sorted(wanted):
        ext.grant_right(username, right, resource, GRANTED_BY)
    for held in ext.list_rights(username):
        if held["created_by"] == GRANTED_BY and (held["right"], held["resource"]) not in wanted:
            ext.revoke_right(username, held["right"], held["resource"])
    return Applied(admin=admin, permissions=permissions, rights=len(wanted))
