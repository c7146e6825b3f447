"""Would the API server admit this ModelExperiment?  The CRD's schema and CEL rules, evaluated for real.

What kube-apiserver does with a create (or update) of a custom resource, in
its order (k8s.io/apiextensions-apiserver, registry/customresource/strategy.go):

1. decode: with ``kubectl apply`` (server-side field validation ``Strict``)
   an unknown field is an error; a null where the schema is not nullable is
   dropped before defaulting;
2. default: the schema's ``default``s fill missing fields, top-down (the
   rules see the defaulted object);
3. validate against the OpenAPI schema (types, enums, patterns, bounds,
   required fields) and the list-type invariants (unique keys of ``map``
   lists, unique items of ``set`` lists);
4. unless step 3 found a *blocking* error (wrong type, missing required
   field, unsupported enum value, too long, too many) -- then it only adds
   "some validation rules were not checked ..." -- evaluate every
   ``x-kubernetes-validations`` rule at every schema node present in the
   object, with ``self`` bound to that node's value.

CEL is cel-python's (``celpy``), fed values typed by the schema as the API
server types them (``number`` is a double even when written ``2``).  The
Kubernetes CEL extensions the rules use and celpy lacks, ``isSorted()`` of
the Kubernetes lists library and ``lowerAscii()`` of its strings library,
are implemented here from Kubernetes' (and cel-go's) docs.
celpy's ``matches()`` is RE2, as cel-go's is, and schema ``pattern``s are
matched with RE2 here too (Go's regexp is RE2: ``$`` is the end of the text,
``\\s`` is ASCII whitespace).  The messages follow kube-apiserver's wording
closely enough to show what the user reads; they are not byte-exact.

Also here: a static check of each rule against the schema, as the API server
does when the CRD is applied (an undefined field or an unknown function is
an error then, not when an object is created).

Not modelled: CEL cost estimation and budget, transition rules (``oldSelf``),
``messageExpression``, and ``metadata`` validation.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import itertools
import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import celpy
import celpy.celtypes as ct
import jsonschema
import lark
import re2
import yaml
from celpy.evaluation import base_functions

from test_crd import CRD_PATH, apply_defaults, to_json_schema

Node = dict[str, Any]


@functools.cache
def crd_schema() -> Node:
    """The CRD's openAPIV3Schema (read once per test session)."""
    with CRD_PATH.open() as f:
        crd = yaml.safe_load(f)
    (version,) = crd["spec"]["versions"]
    schema: Node = version["schema"]["openAPIV3Schema"]
    return schema


# --------------------------------------------------------------------------- CEL: Kubernetes' extensions


def _is_sorted(values: Any) -> ct.BoolType:
    """``<list<T>>.isSorted() <bool>`` of the Kubernetes lists library.

    "Returns true if the provided list of comparable elements is sorted, else
    returns false" -- non-strictly: ``['a', 'b', 'b', 'c'].isSorted()`` is true,
    ``[2.0, 1.0].isSorted()`` false, ``[]`` and ``[1]`` true.
    """
    if not isinstance(values, ct.ListType):
        raise TypeError(f"isSorted() needs a list, got {type(values).__name__}")
    return ct.BoolType(all(a <= b for a, b in itertools.pairwise(values)))


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _lower_ascii(value: Any) -> ct.StringType:
    """``<string>.lowerAscii() <string>`` of the Kubernetes strings library (cel-go's ext.Strings).

    "Returns a new string where all ASCII characters are lower-cased.  This
    function does not perform Unicode case-mapping for characters outside the
    ASCII range" -- so ``'\\u212a'`` (the Kelvin sign) stays as it is, unlike
    with Python's ``str.lower()``.
    """
    if not isinstance(value, ct.StringType):
        raise TypeError(f"lowerAscii() needs a string, got {type(value).__name__}")
    return ct.StringType(str(value).translate(_ASCII_LOWER))


# Kubernetes CEL functions the rules may use that celpy does not have, by name.
EXTENSIONS: dict[str, Callable[..., Any]] = {"isSorted": _is_sorted, "lowerAscii": _lower_ascii}
# Macros: parsed by celpy (not functions), with their variable bound per element.
MACROS = frozenset({"has", "all", "exists", "exists_one", "map", "filter"})
# Functions of CEL's standard library celpy evaluates (operators excluded).
STANDARD = frozenset(name for name in base_functions if name.isidentifier())
EVALUABLE = STANDARD | MACROS | frozenset(EXTENSIONS)
# Type names a rule may mention as identifiers (``type(self) == string``).
TYPE_NAMES = frozenset(
    {"int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type", "type"}
)

_ENV = celpy.Environment()


@dataclasses.dataclass(frozen=True)
class Rule:
    """One ``x-kubernetes-validations`` entry and where it sits in the schema."""

    path: str  # schema path, as test_crd.walk spells it: ".spec.metrics[]"
    index: int  # position in that node's list of rules
    rule: str
    message: str
    node: Node = dataclasses.field(repr=False, compare=False)

    @property
    def id(self) -> str:
        return f"{self.path or '<root>'}#{self.index}"

    @property
    def ast(self) -> lark.Tree:
        """The parsed rule (raises ``celpy.CELParseError`` when it does not compile)."""
        return _compile(self.rule)

    def evaluate(self, value: Any) -> Any:
        """The rule's result with ``self`` = ``value`` (plain JSON, converted by this node's schema)."""
        return _program(self.rule).evaluate({"self": to_cel(value, self.node)})


@functools.cache
def _compile(text: str) -> lark.Tree:
    return _ENV.compile(text)


@functools.cache
def _program(text: str) -> celpy.Runner:
    return _ENV.program(_compile(text), functions=EXTENSIONS)


def _walk(node: Node, path: str = "") -> Iterator[tuple[str, Node]]:
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def all_rules(schema: Node | None = None) -> list[Rule]:
    """Every rule in the schema, in schema order."""
    found = []
    for path, node in _walk(schema if schema is not None else crd_schema()):
        for index, entry in enumerate(node.get("x-kubernetes-validations", [])):
            found.append(Rule(path, index, entry["rule"], entry["message"], node))
    return found


def to_cel(value: Any, node: Node) -> Any:
    """``value`` as the API server hands it to CEL: typed by the schema, unknown fields pruned."""
    if value is None:
        return None
    kind = node.get("type")
    if kind == "object":
        if "properties" in node:
            props = node["properties"]
            return ct.MapType({ct.StringType(k): to_cel(v, props[k]) for k, v in value.items() if k in props})
        if isinstance(node.get("additionalProperties"), dict):
            inner = node["additionalProperties"]
            return ct.MapType({ct.StringType(k): to_cel(v, inner) for k, v in value.items()})
        return celpy.json_to_cel(value)
    if kind == "array":
        return ct.ListType([to_cel(item, node.get("items", {})) for item in value])
    if kind == "string":
        return ct.StringType(value)
    if kind == "integer":
        return ct.IntType(value)
    if kind == "number":
        return ct.DoubleType(float(value))
    if kind == "boolean":
        return ct.BoolType(value)
    return celpy.json_to_cel(value)


# --------------------------------------------------------------------------- CEL: static check


def check_rule(rule: Rule) -> list[str]:
    """What the API server would refuse in this rule when the CRD is applied (``[]`` if nothing).

    An undefined field of a typed object (``self.candiate``), an undeclared
    variable, and a function that is neither CEL's, a macro, nor one of
    :data:`EXTENSIONS` (so it could not be evaluated here either).
    """
    problems: list[str] = []
    _check(rule.ast, {"self": rule.node}, problems)
    return problems


def _token(item: Any) -> str:
    assert isinstance(item, lark.Token), item
    return str(item)


def _element(node: Node | None) -> Node | None:
    """What a macro's variable ranges over: a list's items, a map's keys."""
    if node is None:
        return None
    if node.get("type") == "array":
        items = node.get("items")
        return items if isinstance(items, dict) else None
    if node.get("type") == "object":
        return {"type": "string"}
    return None


def _check(tree: Any, scope: Mapping[str, Node | None], problems: list[str]) -> Node | None:
    """Check ``tree``; return the schema node of its value when it is a field path, else None."""
    if not isinstance(tree, lark.Tree):
        return None
    kind, children = tree.data, tree.children
    if kind == "ident":
        name = _token(children[0])
        if name in scope:
            return scope[name]
        if name not in TYPE_NAMES:
            problems.append(f"undeclared reference to {name!r}")
        return None
    if kind == "member_dot":
        receiver = _check(children[0], scope, problems)
        name = _token(children[1])
        if receiver is None:
            return None
        if "properties" in receiver:
            if name not in receiver["properties"]:
                problems.append(
                    f"undefined field {name!r} (has: {', '.join(sorted(receiver['properties']))})"
                )
                return None
            sub: Node = receiver["properties"][name]
            return sub
        if isinstance(receiver.get("additionalProperties"), dict):
            inner: Node = receiver["additionalProperties"]
            return inner
        problems.append(f"field selection {name!r} on a value of type {receiver.get('type')}")
        return None
    if kind == "member_index":
        receiver = _check(children[0], scope, problems)
        _check(children[1], scope, problems)
        if receiver is None:
            return None
        if receiver.get("type") == "array":
            return receiver.get("items")
        extra = receiver.get("additionalProperties")
        return extra if isinstance(extra, dict) else None
    if kind == "member_dot_arg":
        receiver = _check(children[0], scope, problems)
        name = _token(children[1])
        args = children[2].children if len(children) > 2 else []
        if name in MACROS - {"has"}:
            if len(args) != 2 or not isinstance(args[0], lark.Tree):
                problems.append(f"{name}() takes a variable and an expression")
                return None
            variable = _variable_name(args[0])
            _check(args[1], {**scope, variable: _element(receiver)}, problems)
            return None
        _known_function(name, problems)
        for arg in args:
            _check(arg, scope, problems)
        return None
    if kind == "ident_arg":
        name = _token(children[0])
        _known_function(name, problems)
        for arg in children[1].children if len(children) > 1 else []:
            _check(arg, scope, problems)
        return None
    results = [_check(child, scope, problems) for child in children]
    # Pass-through nodes (expr -> conditionalor -> ... -> member -> primary) keep the field's node.
    return results[0] if len(children) == 1 else None


def _variable_name(tree: lark.Tree) -> str:
    idents = [t for t in tree.iter_subtrees() if t.data == "ident"]
    assert len(idents) == 1, tree
    return _token(idents[0].children[0])


def _known_function(name: str, problems: list[str]) -> None:
    if name not in EVALUABLE:
        problems.append(f"function {name}() is neither CEL's nor implemented in cel_eval.EXTENSIONS")


# --------------------------------------------------------------------------- the API server's answer


def _crd_pattern(converted: str) -> str:
    """The CRD's pattern back from test_crd.to_json_schema, which made its final ``$`` Python's ``\\Z``."""
    return converted[:-2] + "$" if converted.endswith(r"\Z") else converted


def _re2_pattern(
    validator: jsonschema.protocols.Validator, pattern: str, instance: Any, schema: Node
) -> Iterator[jsonschema.ValidationError]:
    if validator.is_type(instance, "string") and not re2.search(_crd_pattern(pattern), instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {_crd_pattern(pattern)!r}")


_Validator = jsonschema.validators.extend(jsonschema.Draft7Validator, {"pattern": _re2_pattern})


@functools.cache
def _validator() -> jsonschema.protocols.Validator:
    converted = to_json_schema(crd_schema())
    jsonschema.Draft7Validator.check_schema(converted)
    return _Validator(converted)


@dataclasses.dataclass(frozen=True)
class FieldError:
    """One entry of the API server's answer: ``spec.canary.steps: Invalid value: ...``."""

    path: str  # as Kubernetes prints field paths: spec.metrics[1].query
    type: str  # how Kubernetes prints its field.ErrorType: "Invalid value", "Required value", ...
    detail: str
    source: str  # "decode", "schema", "list-type", "cel" or "cel-error"
    # Its field.ErrorType is one after which the API server does not evaluate CEL rules:
    # NotSupported, Required, TooLong, TooMany or TypeInvalid (printed "Invalid value").
    blocking: bool = False
    rule: str | None = None  # for CEL: the rule's Rule.id (".spec.canary.steps#0")

    def __str__(self) -> str:
        if self.source == "decode":
            return f'strict decoding error: unknown field "{self.path}"'
        return f"{self.path}: {self.type}: {self.detail}" if self.detail else f"{self.path}: {self.type}"


NOT_CHECKED = (
    "some validation rules were not checked because the object was invalid; "
    "correct the existing errors to complete validation"
)


def _show(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return f'"{"object" if isinstance(value, dict) else "array"}"'
    return json.dumps(value, ensure_ascii=False)


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    for python, name in (
        (dict, "object"),
        (list, "array"),
        (str, "string"),
        (int, "integer"),
        (float, "number"),
    ):
        if isinstance(value, python):
            return name
    return "null"


@dataclasses.dataclass(frozen=True)
class Key:
    """A map key in a field path: Kubernetes prints it in brackets (``headers[x-user-tier]``)."""

    name: str


def field_path(parts: Any) -> str:
    """Parts (names, indexes, :class:`Key`s) as Kubernetes prints a field path: ``spec.metrics[1].query``."""
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif isinstance(part, Key):
            path += f"[{part.name}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _schema_error(error: jsonschema.ValidationError) -> FieldError:
    path, value, keyword, bound = (
        field_path(error.absolute_path),
        error.instance,
        error.validator,
        error.validator_value,
    )
    where = f"{path} in body"
    shown = _show(value)
    if keyword == "additionalProperties":
        # One error for the object; strict decoding names each field (the first is enough here).
        name = sorted(set(value) - set(error.schema.get("properties", {})))[0]
        return FieldError(field_path([*error.absolute_path, name]), "unknown field", "", "decode")
    if keyword == "required":
        missing = error.message.split("'")[1]
        return FieldError(field_path([*error.absolute_path, missing]), "Required value", "", "schema", True)
    if keyword == "enum":
        supported = ", ".join(json.dumps(v) for v in bound)
        return FieldError(
            path, "Unsupported value", f"{shown}: supported values: {supported}", "schema", True
        )
    if keyword == "type":
        expected = bound if isinstance(bound, str) else bound[0]
        detail = f'"{_type_name(value)}": {where} must be of type {expected}: "{_type_name(value)}"'
        return FieldError(path, "Invalid value", detail, "schema", True)
    if keyword in ("maxLength", "maxItems", "maxProperties"):
        if keyword == "maxLength":
            return FieldError(path, "Too long", f"may not be more than {bound} bytes", "schema", True)
        return FieldError(path, "Too many", f"{len(value)}: must have at most {bound} items", "schema", True)
    if keyword == "uniqueItems":
        seen: list[Any] = []
        for index, item in enumerate(value):
            if item in seen:
                return FieldError(f"{path}[{index}]", "Duplicate value", _show(item), "list-type")
            seen.append(item)
    messages = {
        "minimum": f"should be greater than or equal to {bound}",
        "maximum": f"should be less than or equal to {bound}",
        "exclusiveMinimum": f"should be greater than {bound}",
        "exclusiveMaximum": f"should be less than {bound}",
        "pattern": f"should match '{_crd_pattern(str(bound))}'",
        "minLength": f"should be at least {bound} chars long",
        "minItems": f"should have at least {bound} items",
        "minProperties": f"should have at least {bound} properties",
    }
    detail = messages.get(keyword, error.message)
    return FieldError(path, "Invalid value", f"{shown}: {where} {detail}", "schema")


def _drop_nulls(value: Any, node: Node) -> Any:
    """Decoding drops nulls where the schema is not nullable (they are then defaulted)."""
    if isinstance(value, dict):
        properties = node.get("properties", {})
        extra = node.get("additionalProperties")
        out = {}
        for key, item in value.items():
            sub = properties.get(key, extra if isinstance(extra, dict) else None)
            if item is None and sub is not None and not sub.get("nullable"):
                continue
            out[key] = _drop_nulls(item, sub) if sub is not None else item
        return out
    if isinstance(value, list) and isinstance(node.get("items"), dict):
        return [_drop_nulls(item, node["items"]) for item in value]
    return value


def _map_list_errors(value: Any, node: Node, path: list[Any]) -> Iterator[FieldError]:
    """x-kubernetes-list-type: map -- no two items may share their keys."""
    if isinstance(value, dict):
        for key, sub in node.get("properties", {}).items():
            if key in value:
                yield from _map_list_errors(value[key], sub, [*path, key])
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        if node.get("x-kubernetes-list-type") == "map":
            keys = node.get("x-kubernetes-list-map-keys", [])
            seen: list[Any] = []
            for index, item in enumerate(value):
                if not isinstance(item, dict):
                    continue
                identity = {key: item.get(key) for key in keys}
                if identity in seen:
                    shown = ", ".join(f'"{k}":{json.dumps(v)}' for k, v in identity.items())
                    yield FieldError(
                        field_path([*path, index]),
                        "Duplicate value",
                        f"map[string]interface {{}}{{{shown}}}",
                        "list-type",
                    )
                seen.append(identity)
        for index, item in enumerate(value):
            yield from _map_list_errors(item, node["items"], [*path, index])


def cel_errors(value: Any) -> list[FieldError]:
    """Every rule at every node present in ``value`` (already defaulted), as the API server runs them."""
    return list(_cel_errors(value, crd_schema(), [], ""))


def _cel_errors(value: Any, node: Node, path: list[Any], schema_path: str) -> Iterator[FieldError]:
    where = field_path(path)
    for index, entry in enumerate(node.get("x-kubernetes-validations", [])):
        rule = f"{schema_path}#{index}"
        try:
            result = _program(entry["rule"]).evaluate({"self": to_cel(value, node)})
        except celpy.CELEvalError as e:
            detail = f'"{node.get("type")}": rule evaluation error: {e.args[0]}'
            yield FieldError(where, "Invalid value", detail, "cel-error", rule=rule)
            continue
        if not isinstance(result, ct.BoolType):
            detail = f"rule did not evaluate to a bool: {result!r}"
            yield FieldError(where, "Invalid value", detail, "cel-error", rule=rule)
        elif not result:
            detail = f'"{node.get("type")}": {entry["message"]}'
            yield FieldError(where, "Invalid value", detail, "cel", rule=rule)
    if isinstance(value, dict):
        properties = node.get("properties", {})
        extra = node.get("additionalProperties")
        for key, item in value.items():
            if item is None:
                continue
            if key in properties:
                yield from _cel_errors(item, properties[key], [*path, key], f"{schema_path}.{key}")
            elif isinstance(extra, dict):
                yield from _cel_errors(item, extra, [*path, Key(key)], f"{schema_path}{{}}")
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for index, item in enumerate(value):
            yield from _cel_errors(item, node["items"], [*path, index], f"{schema_path}[]")


def admission_errors(manifest: Mapping[str, Any]) -> list[FieldError]:
    """What the API server answers to creating ``manifest`` (``[]``: it is admitted)."""
    schema = crd_schema()
    obj = apply_defaults(_drop_nulls(copy.deepcopy(dict(manifest)), schema), schema)
    schema_errors = sorted(
        (_schema_error(error) for error in _validator().iter_errors(obj)), key=lambda e: (e.path, e.type)
    )
    unknown = [error for error in schema_errors if error.source == "decode"]
    if unknown:
        return unknown  # strict decoding fails before anything is validated
    errors = schema_errors + list(_map_list_errors(obj, schema, []))
    if any(error.blocking for error in errors):
        return [*errors, FieldError("<nil>", "Invalid value", NOT_CHECKED, "schema")]
    return errors + cel_errors(obj)


def admits(manifest: Mapping[str, Any]) -> bool:
    return not admission_errors(manifest)
