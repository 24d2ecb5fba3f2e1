"""Reading a Core ML package's MIL program back with coremltools (``milproto.load``), and walking it."""

from __future__ import annotations

from pathlib import Path

from mobilesd.errors import MobileSDError


def silence_coremltools():
    """coremltools warns at import on Linux (no native runtime) and logs every pass: keep only its errors."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", module="coremltools")
    logging.getLogger("coremltools").setLevel(logging.ERROR)


def load_program(path):
    """The pymil ``Program`` stored in an ``.mlpackage`` (or an ML-program ``.mlmodel``, or an in-memory
    ``coremltools.models.MLModel``); a ``Program`` is returned unchanged."""
    silence_coremltools()
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load as milproto_load
    from coremltools.converters.mil.mil import Program

    if isinstance(path, Program):
        return path
    if isinstance(path, ct.models.MLModel):
        model, where = path, "MLModel"
    else:
        p = Path(path)
        if not p.exists():
            raise MobileSDError(f"{p}: no such Core ML package", "pass the path of a .mlpackage (a folder)")
        if p.suffix not in (".mlpackage", ".mlmodel"):
            raise MobileSDError(f"{p.name}: not a Core ML model", "pass a .mlpackage (or an ML-program .mlmodel)")
        model, where = ct.models.MLModel(str(p), skip_model_load=True), str(p)
    spec = model.get_spec()
    if spec.WhichOneof("Type") != "mlProgram":
        raise MobileSDError(f"{where}: a neural-network Core ML model, not an ML program",
                            "convert with convert_to='mlprogram' (the interpreter reads MIL programs only)")
    weights_dir = getattr(model, "weights_dir", None) or ""
    try:
        prog = milproto_load(spec, spec.specificationVersion, weights_dir)
    except Exception as e:
        raise MobileSDError(f"{where}: coremltools could not read the MIL program back ({type(e).__name__}: {e})",
                            "re-save the package with coremltools 9 (the version this repo pins)") from e
    return prog


def find_function(prog, function: str):
    if function in prog.functions:
        return prog.functions[function]
    if function == "main" and len(prog.functions) == 1:
        return next(iter(prog.functions.values()))
    raise MobileSDError(f"the program has no function {function!r} (it has {sorted(prog.functions)})",
                        "pass function= one of those names")


def walk_ops(block):
    """Every op of a block, nested blocks (cond / while_loop bodies) included."""
    for op in block.operations:
        yield op
        for b in op.blocks:
            yield from walk_ops(b)


def flat_inputs(op):
    """The vars an op reads (tuple inputs such as concat's ``values`` flattened)."""
    for v in op.inputs.values():
        if isinstance(v, (list, tuple)):
            yield from v
        elif v is not None:
            yield v


def is_constexpr(op_type: str) -> bool:
    return op_type.startswith("constexpr_")
