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


# -- instrumentation ---------------------------------------------------------------------
def _emitter(fn: ast.FunctionDef) -> int:
    for d in fn.decorator_list:
        name = d.attr if isinstance(d, ast.Attribute) else getattr(d, "id", "")
        if name == "viper":
            return _VIPER
        if name == "native":
            return _NATIVE
    return _INTERP


def _counter(kind: int, k: int) -> ast.stmt:
    target = VIPER_PTR if kind == _VIPER else COUNTER
    return ast.AugAssign(
        target=ast.Subscript(
            value=ast.Name(target, ast.Load()), slice=ast.Constant(kind), ctx=ast.Store()
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
    def block(self, body: list[ast.stmt], kind: int, extra: int = 0) -> list[ast.stmt]:
        """The statements with a counter before each straight run; `extra` opcodes (loop
        step, function entry) are added to the first run."""
        out: list[ast.stmt] = []
        run: list[ast.stmt] = []
        cost = extra

        def close() -> None:
            nonlocal cost
            if run:
                if cost:
                    out.append(_counter(kind, cost))
                out.extend(run)
                run.clear()
            cost = 0

        for i, node in enumerate(body):
            if i == 0 and _is_docstring(node):
                out.append(node)
                continue
            run.append(self.stmt(node, kind))
            cost += stmt_cost(node) if not _is_docstring(node) else 0
            if isinstance(node, ast.If | ast.For | ast.While | ast.Try | ast.With):
                close()
        close()
        if extra and not out:
            out.append(_counter(kind, extra))
        return out or [ast.Pass()]

    def stmt(self, node: ast.stmt, kind: int) -> ast.stmt:
        if isinstance(node, ast.FunctionDef):
            inner = _emitter(node) or (kind if kind != _VIPER else _INTERP)
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
            node.body = self.block(node.body, kind, extra=_per_iteration(node))
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
