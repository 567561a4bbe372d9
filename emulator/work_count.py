"""Counted firmware for the MicroPython runtime: the interpreter's work as opcodes.

The unix port has no bytecode counter (no ``sys.settrace``), so the emulator flashes an
instrumented copy of the firmware on its MicroPython board: every straight run of
statements starts with ``_xw[0] += k``, k being the CPython opcodes those statements take
(the unit the in-process runtime's tracer counts and emulator/clock.py calibrates), and
every loop body with its per-iteration cost. Functions decorated ``@micropython.viper``
count into ``_xw[1]`` (through a ``ptr32``, no objects), ``@micropython.native`` ones into
``_xw[2]``. The bridge client (``emulator/mpy/_emu_hw.py``) sends the counts with the next
machine call, where the board charges them exactly as the in-process runtime charges what
it traces. The counts are static per statement, so they are deterministic; they differ
from the traced ones only inside one statement (short-circuits, conditional expressions,
an exception leaving a run of statements early).

The counters cost the emulated board nothing (they are not firmware work) and allocate
nothing (a small int stored in an ``array``), so ``micropython.heap_lock()`` still holds.
"""

from __future__ import annotations

import ast
import dis
import types

COUNTER = "_xw"
"""The counter array's name in instrumented modules (``from _emu_work import W as _xw``)."""
VIPER_PTR = "_xwp"

_INTERP, _VIPER, _NATIVE = 0, 1, 2


# -- static cost of an expression / statement, in CPython 3.11 opcodes ------------------
def expr_cost(node: ast.AST | None) -> int:
    """Opcodes CPython evaluates for an expression (one pass, no short-circuit)."""
    if node is None:
        return 1  # LOAD_CONST None
    if isinstance(node, ast.Constant | ast.Name):
        return 1
    if isinstance(node, ast.Attribute):
        return expr_cost(node.value) + 1
    if isinstance(node, ast.Subscript):
        return expr_cost(node.value) + _index_cost(node.slice) + 1
    if isinstance(node, ast.BinOp):
        return expr_cost(node.left) + expr_cost(node.right) + 1
    if isinstance(node, ast.UnaryOp):
        if isinstance(node.operand, ast.Constant):
            return 1  # folded
        return expr_cost(node.operand) + 1
    if isinstance(node, ast.BoolOp):
        return sum(expr_cost(v) for v in node.values) + len(node.values) - 1
    if isinstance(node, ast.Compare):
        extra = 3 * (len(node.ops) - 1)  # chained: SWAP, COPY, jump
        return expr_cost(node.left) + sum(expr_cost(c) + 1 for c in node.comparators) + extra
    if isinstance(node, ast.Call):
        kw = 1 if node.keywords else 0
        args = sum(expr_cost(a) for a in node.args) + sum(expr_cost(k.value) for k in node.keywords)
        return expr_cost(node.func) + args + 2 + kw  # PRECALL, CALL
    if isinstance(node, ast.IfExp):
        return expr_cost(node.test) + 1 + max(expr_cost(node.body), expr_cost(node.orelse))
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        if all(isinstance(e, ast.Constant) for e in node.elts) and isinstance(node, ast.Tuple):
            return 1  # a constant tuple
        return sum(expr_cost(e) for e in node.elts) + 1
    if isinstance(node, ast.Dict):
        return (
            sum(expr_cost(k) + expr_cost(v) for k, v in zip(node.keys, node.values, strict=True))
            + 1
        )
    if isinstance(node, ast.Starred):
        return expr_cost(node.value) + 1
    if isinstance(node, ast.JoinedStr):
        return sum(expr_cost(v) for v in node.values) + 1
    if isinstance(node, ast.FormattedValue):
        return expr_cost(node.value) + 1
    if isinstance(node, ast.Lambda):
        return 2
    if isinstance(node, ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp):
        return 6 + sum(expr_cost(g.iter) for g in node.generators)
    return 1


def _index_cost(node: ast.AST) -> int:
    if isinstance(node, ast.Slice):
        return expr_cost(node.lower) + expr_cost(node.upper) + 1  # BUILD_SLICE
    return expr_cost(node)


def _store_cost(target: ast.AST) -> int:
    if isinstance(target, ast.Name):
        return 1
    if isinstance(target, ast.Attribute):
        return expr_cost(target.value) + 1
    if isinstance(target, ast.Subscript):
        return expr_cost(target.value) + _index_cost(target.slice) + 1
    if isinstance(target, ast.Tuple | ast.List):
        return 1 + sum(_store_cost(e) for e in target.elts)
    return 1


def stmt_cost(node: ast.stmt) -> int:
    """Opcodes of a simple statement, or of a compound statement's header evaluated once
    (its bodies are counted where they run)."""
    if isinstance(node, ast.Expr):
        return expr_cost(node.value) + 1  # POP_TOP
    if isinstance(node, ast.Assign):
        return (
            expr_cost(node.value)
            + sum(_store_cost(t) for t in node.targets)
            + len(node.targets)
            - 1
        )
    if isinstance(node, ast.AnnAssign):
        return (expr_cost(node.value) + _store_cost(node.target)) if node.value else 0
    if isinstance(node, ast.AugAssign):
        t = node.target
        value = expr_cost(node.value)
        if isinstance(t, ast.Subscript):
            return expr_cost(t.value) + _index_cost(t.slice) + value + 7
        if isinstance(t, ast.Attribute):
            return expr_cost(t.value) + value + 5
        return value + 3
    if isinstance(node, ast.Return):
        return expr_cost(node.value) + 1
    if isinstance(node, ast.Raise):
        return expr_cost(node.exc) + 1 if node.exc else 1
    if isinstance(node, ast.Assert):
        return expr_cost(node.test) + 1
    if isinstance(node, ast.Pass | ast.Break | ast.Continue | ast.Try):
        return 1
    if isinstance(node, ast.Import | ast.ImportFrom):
        return 2 + 2 * len(node.names)
    if isinstance(node, ast.Global | ast.Nonlocal):
        return 0
    if isinstance(node, ast.Delete):
        return sum(_store_cost(t) for t in node.targets)
    if isinstance(node, ast.If):
        return expr_cost(node.test) + 1
    if isinstance(node, ast.For):
        return expr_cost(node.iter) + 2  # GET_ITER, the last FOR_ITER
    if isinstance(node, ast.While):
        return _while_test(node)
    if isinstance(node, ast.With):
        return sum(expr_cost(i.context_expr) for i in node.items) + 10
    if isinstance(node, ast.FunctionDef | ast.ClassDef):
        return 3 + sum(expr_cost(d) for d in node.decorator_list)
    return 1


def _while_test(node: ast.While) -> int:
    if isinstance(node.test, ast.Constant) and node.test.value:
        return 0
    return expr_cost(node.test) + 1


def _per_iteration(node: ast.For | ast.While) -> int:
    if isinstance(node, ast.For):
        return 2 + _store_cost(node.target)  # FOR_ITER, target, JUMP_BACKWARD
    return _while_test(node) + 1  # test again, jump


# -- object operations inside viper code ---------------------------------------------------
# Viper compiles integer and pointer work to machine code, but an operation on a Python
# object (an attribute or method, a call of anything but a cast, a subscript of anything
# but a typed pointer, iterating a list or tuple, arithmetic or a comparison with an
# object) is still a call into the runtime, the same call the interpreter makes. Those
# opcodes are charged as interpreted ones (the cost table's "bytecode"); only the rest is
# charged as "viper_op".
VIPER_CASTS = frozenset({"int", "uint", "ptr", "ptr8", "ptr16", "ptr32", "range"})
"""Callables viper compiles inline (type casts, the `for ... in range` loop)."""
POINTERS = frozenset({"ptr", "ptr8", "ptr16", "ptr32"})


def viper_pointers(fn: ast.FunctionDef) -> frozenset[str]:
    """Names that hold typed pointers in a viper function: annotated parameters and locals
    assigned a pointer cast."""
    names = {
        a.arg
        for a in fn.args.args
        if isinstance(a.annotation, ast.Name) and a.annotation.id in POINTERS
    }
    for node in ast.walk(fn):
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name)
            and node.value.func.id in POINTERS
        ):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return frozenset(names)


def viper_objects(fn: ast.FunctionDef, ptrs: frozenset[str]) -> frozenset[str]:
    """Names that hold Python objects in a viper function: parameters without a type,
    locals first assigned an object (a call other than a cast, an attribute, a subscript
    of an object, another object) and the targets of a loop over an object."""
    names = {a.arg for a in fn.args.args if a.annotation is None}
    for node in ast.walk(fn):
        if isinstance(node, ast.For) and _object_iteration(node):
            names.update(n.id for n in ast.walk(node.target) if isinstance(n, ast.Name))
        if isinstance(node, ast.Assign) and _is_object(node.value, ptrs, names):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return frozenset(names)


def _is_object(e: ast.AST, ptrs: frozenset[str], objs: set[str] | frozenset[str]) -> bool:
    if isinstance(e, ast.Call):
        return not (isinstance(e.func, ast.Name) and e.func.id in VIPER_CASTS)
    if isinstance(e, ast.Attribute):
        return True
    if isinstance(e, ast.Subscript):
        return not (isinstance(e.value, ast.Name) and e.value.id in ptrs)
    return isinstance(e, ast.Name) and e.id in objs


def _object_iteration(node: ast.For) -> bool:
    it = node.iter
    return not (
        isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "range"
    )


_COMPARE = frozenset({"COMPARE_OP", "CONTAINS_OP"})


def _value_ops(n: ast.Compare) -> int:
    """Comparisons that call the runtime (`is` / `is not` compare identities inline)."""
    return sum(1 for op in n.ops if not isinstance(op, ast.Is | ast.IsNot))


def object_nodes(
    node: ast.AST, ptrs: frozenset[str], objs: frozenset[str]
) -> list[tuple[ast.AST, frozenset[str]]]:
    """The object operations within an expression or statement of viper code (nested
    bodies included), each with the opcodes CPython compiles it to (matched by the
    source span they share). Arithmetic or a comparison (not `is`) with an object operand
    is one."""
    found: list[tuple[ast.AST, frozenset[str]]] = []
    for n in ast.walk(node):
        if isinstance(n, ast.Compare) and _value_ops(n):
            if any(_is_object(e, ptrs, objs) for e in [n.left, *n.comparators]):
                found.append((n, _COMPARE))
        elif isinstance(n, ast.BinOp) and (
            _is_object(n.left, ptrs, objs) or _is_object(n.right, ptrs, objs)
        ):
            found.append((n, frozenset({"BINARY_OP"})))
        if isinstance(n, ast.Attribute):
            found.append((n, frozenset({"LOAD_ATTR", "LOAD_METHOD", "STORE_ATTR"})))
        elif isinstance(n, ast.Call):
            f = n.func
            if not (isinstance(f, ast.Name) and f.id in VIPER_CASTS):
                found.append((n, frozenset({"PRECALL", "CALL"})))
        elif isinstance(n, ast.Subscript):
            v = n.value
            if not (isinstance(v, ast.Name) and v.id in ptrs):
                found.append((n, frozenset({"BINARY_SUBSCR", "STORE_SUBSCR"})))
        elif isinstance(n, ast.For) and _object_iteration(n):
            found.append((n, frozenset({"GET_ITER", "FOR_ITER"})))
            if isinstance(n.target, ast.Tuple | ast.List):
                found.append((n.target, frozenset({"UNPACK_SEQUENCE"})))
    return found


def _header_exprs(node: ast.stmt) -> list[ast.AST]:
    """What a statement evaluates itself (a compound statement: its header only)."""
    if isinstance(node, ast.If | ast.While):
        return [node.test]
    if isinstance(node, ast.For):
        return [node.iter]
    if isinstance(node, ast.With):
        return [i.context_expr for i in node.items]
    if isinstance(node, ast.Try | ast.FunctionDef | ast.ClassDef):
        return []
    return [node]


def object_cost(node: ast.stmt, ptrs: frozenset[str], objs: frozenset[str]) -> int:
    """The share of stmt_cost(node) that is object operations in viper code."""
    n = 0
    for e in _header_exprs(node):
        for sub, _ops in object_nodes(e, ptrs, objs):
            if isinstance(sub, ast.Call):
                n += 2
            elif isinstance(sub, ast.Compare):
                n += _value_ops(sub)
            else:
                n += 1
    t = node.target if isinstance(node, ast.AugAssign) else None
    if isinstance(t, ast.Attribute) or (
        isinstance(t, ast.Subscript) and not (isinstance(t.value, ast.Name) and t.value.id in ptrs)
    ):
        n += 1  # the target is read and written: LOAD_ATTR/BINARY_SUBSCR and the store
    if isinstance(node, ast.For) and _object_iteration(node):
        n += 2  # GET_ITER and the last FOR_ITER
    return n


def _object_per_iteration(node: ast.For | ast.While) -> int:
    if isinstance(node, ast.For) and _object_iteration(node):
        return 1 + (1 if isinstance(node.target, ast.Tuple | ast.List) else 0)
    return 0


def viper_object_offsets(code: types.CodeType, fn: ast.FunctionDef) -> frozenset[int]:
    """Offsets of the opcodes in `code` (compiled from `fn`, at its place in its file)
    that are object operations: what the in-process runtime charges as interpreted."""
    spans: dict[tuple[int, int, int, int], frozenset[str]] = {}
    ptrs = viper_pointers(fn)
    for n, ops in object_nodes(fn, ptrs, viper_objects(fn, ptrs)):
        if isinstance(n, ast.expr | ast.stmt) and n is not fn:
            key = (n.lineno, n.end_lineno or n.lineno, n.col_offset, n.end_col_offset or 0)
            spans[key] = spans.get(key, frozenset()) | ops
    found = set()
    for ins in dis.get_instructions(code):
        p = ins.positions
        if p is None or p.lineno is None:
            continue
        at = (p.lineno, p.end_lineno or p.lineno, p.col_offset or 0, p.end_col_offset or 0)
        if ins.opname in spans.get(at, ()):
            found.add(ins.offset)
    return frozenset(found)


# -- instrumentation ---------------------------------------------------------------------
def _emitter(fn: ast.FunctionDef) -> int:
    for d in fn.decorator_list:
        name = d.attr if isinstance(d, ast.Attribute) else getattr(d, "id", "")
        if name == "viper":
            return _VIPER
        if name == "native":
            return _NATIVE
    return _INTERP


def _counter(kind: int, k: int, slot: int | None = None) -> ast.stmt:
    """`counter[slot] += k` (slot defaults to kind; viper code writes through its pointer,
    its object operations into the interpreted slot)."""
    target = VIPER_PTR if kind == _VIPER else COUNTER
    return ast.AugAssign(
        target=ast.Subscript(
            value=ast.Name(target, ast.Load()),
            slice=ast.Constant(kind if slot is None else slot),
            ctx=ast.Store(),
        ),
        op=ast.Add(),
        value=ast.Constant(k),
    )


def _is_docstring(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )


class _Instrument:
    def __init__(self) -> None:
        self.ptrs: frozenset[str] = frozenset()  # the viper function's pointers ...
        self.objs: frozenset[str] = frozenset()  # ... and objects

    def block(
        self, body: list[ast.stmt], kind: int, extra: int = 0, extra_obj: int = 0
    ) -> list[ast.stmt]:
        """The statements with a counter before each straight run; `extra` opcodes (loop
        step, function entry; `extra_obj` of them object operations) are added to the
        first run. In viper code the object operations count as interpreted opcodes."""
        out: list[ast.stmt] = []
        run: list[ast.stmt] = []
        cost = extra
        obj = extra_obj

        def close() -> None:
            nonlocal cost, obj
            if run:
                if cost - obj:
                    out.append(_counter(kind, cost - obj))
                if obj:
                    out.append(_counter(kind, obj, _INTERP))
                out.extend(run)
                run.clear()
            cost = obj = 0

        for i, node in enumerate(body):
            if i == 0 and _is_docstring(node):
                out.append(node)
                continue
            run.append(self.stmt(node, kind))
            if not _is_docstring(node):
                cost += stmt_cost(node)
                if kind == _VIPER:
                    obj += object_cost(node, self.ptrs, self.objs)
            if isinstance(node, ast.If | ast.For | ast.While | ast.Try | ast.With):
                close()
        close()
        if extra and not out:
            out.append(_counter(kind, extra - extra_obj))
            if extra_obj:
                out.append(_counter(kind, extra_obj, _INTERP))
        return out or [ast.Pass()]

    def stmt(self, node: ast.stmt, kind: int) -> ast.stmt:
        if isinstance(node, ast.FunctionDef):
            inner = _emitter(node) or (kind if kind != _VIPER else _INTERP)
            if inner == _VIPER:
                self.ptrs = viper_pointers(node)
                self.objs = viper_objects(node, self.ptrs)
            body = self.block(node.body, inner, extra=1)  # RESUME
            if inner == _VIPER:
                ptr = ast.Assign(
                    targets=[ast.Name(VIPER_PTR, ast.Store())],
                    value=ast.Call(
                        ast.Name("ptr32", ast.Load()), [ast.Name(COUNTER, ast.Load())], []
                    ),
                )
                first = 1 if body and _is_docstring(body[0]) else 0
                body.insert(first, ptr)
            node.body = body
        elif isinstance(node, ast.ClassDef):
            node.body = self.block(node.body, _INTERP)
        elif isinstance(node, ast.If):
            node.body = self.block(node.body, kind)
            if node.orelse:
                node.orelse = self.block(node.orelse, kind)
        elif isinstance(node, ast.For | ast.While):
            node.body = self.block(
                node.body,
                kind,
                extra=_per_iteration(node),
                extra_obj=_object_per_iteration(node) if kind == _VIPER else 0,
            )
            if node.orelse:
                node.orelse = self.block(node.orelse, kind)
        elif isinstance(node, ast.Try):
            node.body = self.block(node.body, kind)
            for h in node.handlers:
                h.body = self.block(h.body, kind, extra=5)  # PUSH_EXC_INFO, match, POP_EXCEPT
            if node.orelse:
                node.orelse = self.block(node.orelse, kind)
            if node.finalbody:
                node.finalbody = self.block(node.finalbody, kind)
        elif isinstance(node, ast.With):
            node.body = self.block(node.body, kind)
        return node


def instrument(source: str, filename: str = "<firmware>") -> str:
    """The module's source with its opcode counters (module docstring)."""
    tree = ast.parse(source, filename)
    body = _Instrument().block(tree.body, _INTERP)
    first = 1 if body and _is_docstring(body[0]) else 0
    imp = ast.ImportFrom(module="_emu_work", names=[ast.alias("W", COUNTER)], level=0)
    body.insert(first, imp)
    tree.body = body
    return ast.unparse(ast.fix_missing_locations(tree)) + "\n"
