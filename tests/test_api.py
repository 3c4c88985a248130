"""The Python API (qlane.api, exported from qlane): every function on small zoo models, path or
graph and name or target inputs, typed one-line errors, agreement with the command line, and
templates that only ever see plain, sanitised data."""

from __future__ import annotations

import dataclasses
import json
import re
import types
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pytest
from click.testing import CliRunner

import qlane
from conftest import ZOO, zoo_inputs, zoo_reference
from peers import single_op_graph, spec
from qlane.cli import main
from qlane.codegen import emit

ADD = ZOO / "i8_add_7x9x5_relu6.tflite"
CONV = ZOO / "u8_conv_7x9x3_k3s2_same_relu6.tflite"
DW = ZOO / "u8_dw_16x16x32_k3_same.tflite"
MOBILENET = Path(__file__).resolve().parents[1] / "examples" / "mobilenet_v1_0.25_128_u8.tflite"


def cli(*args: object) -> tuple[int, str]:
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exc_info
    return res.exit_code, res.output


def one_line(exc: pytest.ExceptionInfo, needle: str) -> None:
    text = str(exc.value)
    assert "\n" not in text and needle in text, text
    assert isinstance(exc.value, qlane.QlaneError)


# --- inspect -----------------------------------------------------------------------------------

def test_inspect_typed_facts() -> None:
    info = qlane.inspect(ZOO / "i8_conv_12x10x16_k3_same_to24.tflite")
    assert isinstance(info, qlane.ModelInfo) and info.scheme == "int8"
    layer = info.layers[0]
    assert isinstance(layer, qlane.LayerInfo) and layer.op == "CONV_2D" and layer.supported
    assert layer.inputs[0].shape == (1, 12, 10, 16) and layer.weights.startswith("per-axis[24]")
    assert layer.macs == 12 * 10 * 24 * 3 * 3 * 16 == info.total.macs
    assert info.inputs[0].zero_point is not None and len(info.inputs[0].scale) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.total.macs = 0  # type: ignore[misc]


@pytest.mark.parametrize("model", [MOBILENET, ZOO / "i8_conv_12x10x16_k3_same_to24.tflite",
                                   ZOO / "i8_concat_3x9x5_4x9x5_axis1.tflite"])
def test_inspect_json_is_the_cli_document(model: Path) -> None:
    code, out = cli("inspect", model, "--json")
    assert code == 0
    info = qlane.inspect(qlane.load(model))
    assert json.dumps(info.to_json(), indent=1) == out.rstrip("\n")
    assert info == qlane.inspect(str(model))


# --- inputs ------------------------------------------------------------------------------------

def test_read_inputs_and_random_inputs() -> None:
    graph = qlane.load(ADD)
    got = qlane.read_inputs(ZOO / "i8_add_7x9x5_relu6.npz", ADD)
    for a, b in zip(got, zoo_inputs("i8_add_7x9x5_relu6")):
        np.testing.assert_array_equal(a, b)
    r1 = qlane.random_inputs(graph, 5, seed=3)
    r2 = qlane.random_inputs(str(ADD), samples=5, seed=3)
    assert [x.shape for x in r1] == [(5, 1, 7, 9, 5)] * 2 and r1[0].dtype == np.int8
    for a, b in zip(r1, r2):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(r1[0], qlane.random_inputs(graph, 5, seed=4)[0])


def test_read_inputs_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, in0=np.zeros((2, 1, 7, 9, 5), np.int8))
    with pytest.raises(qlane.InputError) as e:
        qlane.read_inputs(bad, ADD)
    one_line(e, "missing array 'in1' for model input 1")
    np.savez(bad, in0=np.zeros((2, 1, 7, 9, 5), np.int8), in1=np.zeros((2, 7, 9, 5), np.int8))
    with pytest.raises(qlane.InputError) as e:
        qlane.read_inputs(bad, ADD)
    one_line(e, "'in1' has shape [2, 7, 9, 5], model input 1 needs [N, 1, 7, 9, 5]")
    np.savez(bad, in0=np.zeros((2, 1, 7, 9, 5), np.uint8), in1=np.zeros((2, 1, 7, 9, 5), np.int8))
    with pytest.raises(ValueError) as e:
        qlane.read_inputs(bad, ADD)
    one_line(e, "dtype uint8, model input 0 needs int8")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(qlane.InputError) as e:
        qlane.read_inputs(tmp_path / "junk.npz", ADD)
    one_line(e, f"{tmp_path / 'junk.npz'} is not an NPZ archive; give one with in0, in1, ...")
    np.save(tmp_path / "x.npy", np.zeros((2, 1, 7, 9, 5), np.int8))
    with pytest.raises(qlane.InputError) as e:
        qlane.read_inputs(tmp_path / "x.npy", ADD)
    one_line(e, f"{tmp_path / 'x.npy'} is a .npy array; give an .npz with in0, in1, ...")
    with pytest.raises(qlane.InputError) as e:
        qlane.read_inputs(tmp_path / "missing.npz", ADD)
    one_line(e, f"cannot read inputs {tmp_path / 'missing.npz'}: No such file or directory")


def test_simulate_path_or_graph() -> None:
    name = "u8_conv_7x9x3_k3s2_same_relu6"
    ref = zoo_reference(name)[0]
    for model in (CONV, qlane.load(CONV)):
        np.testing.assert_array_equal(qlane.simulate(model, zoo_inputs(name)).outputs[0], ref)


def test_save_npz_and_check_output(tmp_path: Path) -> None:
    out = qlane.save_npz(tmp_path / "sub" / "o.npz", {"out0": np.arange(3)})
    np.testing.assert_array_equal(np.load(out)["out0"], np.arange(3))
    with pytest.raises(qlane.InputError, match="refusing to overwrite"):
        qlane.check_output(out, protect=[None, out])
    with pytest.raises(qlane.InputError, match="must end in .npz"):
        qlane.check_output(tmp_path / "o.txt")


# --- targets and generate ----------------------------------------------------------------------

def test_targets_and_load_target() -> None:
    names = [t.name for t in qlane.targets()]
    assert {"generic", "cortex-m4", "cortex-m7", "cortex-a53", "cortex-a72"} <= set(names)
    assert names == sorted(names)
    code, out = cli("targets")
    assert [ln.split()[0] for ln in out.splitlines()[1:]] == names
    m7 = qlane.load_target("cortex-m7")
    assert isinstance(m7, qlane.Target) and qlane.load_target(m7) is m7
    assert [t.name for t in qlane.targets()] == names  # still the function after a lookup
    with pytest.raises(qlane.TargetError) as e:
        qlane.load_target("z80")
    one_line(e, "unknown target 'z80'")


def test_generate_name_or_target_path_or_graph(tmp_path: Path) -> None:
    a = qlane.generate(ADD, "cortex-m7", name="net")
    b = qlane.generate(qlane.load(ADD), qlane.load_target("cortex-m7"), name="net")
    assert isinstance(a, qlane.Project) and a.files == b.files
    assert emit.content_hash(a) == emit.content_hash(b)
    written = qlane.write(a, tmp_path / "w")
    assert sorted(p.relative_to(tmp_path / "w").as_posix() for p in written) == sorted(a.files)
    c = qlane.generate(str(ADD), "cortex-m7", name="net", out=tmp_path / "o")
    assert (tmp_path / "o" / "net.h").read_text() == c.files["net.h"] == a.files["net.h"]


def test_generate_errors(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    out.mkdir()
    (out / "net.c").write_text("/* mine */")
    with pytest.raises(qlane.GenerateError) as e:
        qlane.generate(ADD, "generic", name="net", out=out)
    one_line(e, "not written by qlane")
    assert (out / "net.c").read_text() == "/* mine */"
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\0" * 64)
    with pytest.raises(qlane.ModelError) as e:
        qlane.generate(junk, "generic")
    one_line(e, "junk")


def test_multi_line_errors_are_cut_to_one(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: Any, **kwargs: Any) -> None:
        raise qlane.GenerateError("first line\ncompiler log")

    monkeypatch.setattr(emit, "generate", fail)
    with pytest.raises(qlane.GenerateError) as e:
        qlane.generate(ADD, "generic")
    one_line(e, "first line")
    assert e.value.__notes__ == ["compiler log"]


@pytest.mark.parametrize("name", ["BuildError", "CrossError", "EmulationError", "EstimateError",
                                  "GenerateError", "InputError", "ModelError", "ReportError",
                                  "TargetError"])
def test_every_error_is_a_qlane_error(name: str) -> None:
    assert issubclass(getattr(qlane, name), qlane.QlaneError)


# --- what templates see ------------------------------------------------------------------------

HOSTILE = '*/ #include "/etc/passwd"\nsystem("x"); /* \\ ??/ '
PLAIN = (str, int, float, bool, type(None), np.integer, np.floating, np.bool_)


def _walk(value: Any, path: str, seen: list[str]) -> None:
    """Fail on anything but plain data and the emitter's frozen template views."""
    if isinstance(value, str):
        assert HOSTILE not in value and "\nsystem(" not in value, path  # sanitised only
    elif isinstance(value, PLAIN):
        pass
    elif isinstance(value, np.ndarray):
        assert value.dtype.kind in "iuf" and not value.flags.writeable, path
    elif isinstance(value, dict | types.MappingProxyType):
        for k, v in value.items():
            _walk(v, f"{path}.{k}", seen)
    elif isinstance(value, list | tuple | set | frozenset):
        for k, v in enumerate(value):
            _walk(v, f"{path}[{k}]", seen)
    elif dataclasses.is_dataclass(value) and type(value).__module__ == emit.__name__:
        assert type(value).__dataclass_params__.frozen, path  # type: ignore[attr-defined]
        seen.append(type(value).__name__)
        for f in dataclasses.fields(value):
            _walk(getattr(value, f.name), f"{path}.{f.name}", seen)
    else:
        raise AssertionError(f"{path}: a {type(value).__module__}.{type(value).__qualname__} "
                             "reached a template")


def _hostile_graph() -> qlane.Graph:
    q = qlane.QuantParams(np.float32(0.05), 3)
    ins = [spec([1, 4, 4, 3], np.int8, q, name=HOSTILE + "a"),
           spec([1, 4, 4, 3], np.int8, qlane.QuantParams(np.float32(0.07), -5), name=HOSTILE)]
    out = spec([1, 4, 4, 3], np.int8, qlane.QuantParams(np.float32(0.1), 1), name=HOSTILE + "c")
    graph = single_op_graph("ADD", ins, [out], {"activation": "RELU"})
    graph.name = HOSTILE
    return graph


@pytest.mark.parametrize("model,target", [
    (MOBILENET, "generic"), (MOBILENET, "cortex-m4"), (MOBILENET, "cortex-a53"),
    (ZOO / "i8_conv_12x10x16_k3_same_to24.tflite", "cortex-a72"),
    (ZOO / "u8_softmax_2x1001.tflite", "cortex-m7"), ("hostile", "cortex-a53"),
    ("hostile", "generic"),
])
def test_templates_receive_plain_sanitised_data(monkeypatch: pytest.MonkeyPatch, model: Any,
                                                target: str) -> None:
    render = jinja2.Template.render
    seen: list[str] = []

    def checked(self: jinja2.Template, *args: Any, **kwargs: Any) -> str:
        assert not args
        for k, v in kwargs.items():
            _walk(v, f"{self.name}:{k}", seen)
        return render(self, *args, **kwargs)

    monkeypatch.setattr(jinja2.Template, "render", checked)
    graph = _hostile_graph() if model == "hostile" else qlane.load(model)
    project = qlane.generate(graph, target)
    assert {"TemplateLayer", "TemplateTarget", "TemplateCall", "TemplatePlan"} <= set(seen)
    assert len(project.layers) == len(graph.operators)
    if model == "hostile":
        code = "".join(re.sub(r"/\*.*?\*/", " ", t, flags=re.S)
                       for f, t in project.files.items() if f.endswith((".c", ".h")))
        assert "system(" not in code and "/etc/passwd" not in code


# --- verify ------------------------------------------------------------------------------------

def test_verify_host_tier_agrees_with_cli() -> None:
    calls: list[tuple[str, int, int]] = []
    npz = ZOO / "i8_add_7x9x5_relu6.npz"
    result = qlane.verify(ADD, "generic", npz, samples=2, seed=1,
                          progress=lambda *a: calls.append(a))
    assert isinstance(result, qlane.VerifyResult) and result.bit_exact and result.isa is None
    n = zoo_inputs("i8_add_7x9x5_relu6")[0].shape[0] + 2
    assert result.host.samples == n and [t for t, _ in result.tiers] == [qlane.HOST_TIER]
    compile_, compare = f"{qlane.HOST_TIER}: compile", f"{qlane.HOST_TIER}: compare"
    steps = n * (len(result.host.layers) + 1)
    assert calls[:3] == [(compile_, 0, 1), (compile_, 1, 1), (compare, 0, steps)]
    assert calls[-1] == (compare, steps, steps)
    code, out = cli("verify", ADD, "--target", "generic", "--inputs", npz, "--samples", 2,
                    "--seed", 1, "--json")
    assert code == 0 and json.loads(out) == result.to_json()
    arrays = qlane.read_inputs(npz, ADD)
    again = qlane.verify(qlane.load(ADD), qlane.load_target("generic"), arrays)
    assert again.bit_exact and again.host.samples == n - 2


def test_verify_errors() -> None:
    with pytest.raises(qlane.TargetError) as e:
        qlane.verify(ADD, "generic", samples=1, isa=True)
    one_line(e, "no instruction set to emulate")
    with pytest.raises(qlane.InputError) as e:
        qlane.verify(ADD, "generic")
    one_line(e, "nothing to verify")
    with pytest.raises(qlane.InputError) as e:
        qlane.verify(ADD, "generic", [np.zeros((1, 1, 7, 9, 5), np.int8)])
    one_line(e, "takes 2 input(s), got 1")
    with pytest.raises(qlane.InputError) as e:
        qlane.verify(ADD, "generic", [np.zeros((1, 1, 7, 9, 5), np.int8),
                                      np.zeros((1, 7, 9, 5), np.int8)])
    one_line(e, "inputs[1] has shape [1, 7, 9, 5]")


def test_verify_on_the_instruction_set() -> None:
    pytest.importorskip("unicorn")
    pytest.importorskip("ziglang")
    result = qlane.verify(CONV, "cortex-m4", samples=2, isa=True)
    assert result.bit_exact and result.isa is not None and result.isa.counts
    assert [t for t, _ in result.tiers] == [qlane.HOST_TIER, "emulated cortex-m4"]
    assert result.to_json()["isa"]["bit_exact"] is True


# --- estimate ----------------------------------------------------------------------------------

def test_estimate_static_agrees_with_cli() -> None:
    est = qlane.estimate(DW, "cortex-m4", mode="static")
    assert est.mode == "static" and est.macs == 73_728 and est.cycles > 0
    same = qlane.estimate(qlane.load(DW), qlane.load_target("cortex-m4"), mode="static")
    assert same.to_json() == est.to_json()
    code, out = cli("estimate", DW, "--target", "cortex-m4", "--mode", "static", "--json")
    assert code == 0 and json.loads(out) == json.loads(json.dumps(est.to_json()))


def test_estimate_emulated() -> None:
    pytest.importorskip("unicorn")
    pytest.importorskip("ziglang")
    est = qlane.estimate(ZOO / "u8_add_7x9x3.tflite", "cortex-a53")
    assert est.mode == "emulated" and est.layers[0].instructions > 0


def test_estimate_errors() -> None:
    with pytest.raises(qlane.EstimateError) as e:
        qlane.estimate(DW, "generic", mode="static")
    one_line(e, "no cycle model")
    with pytest.raises(qlane.EstimateError) as e:
        qlane.estimate(DW, "cortex-m4", mode="fast")  # type: ignore[arg-type]
    one_line(e, "unknown mode")


# --- the README --------------------------------------------------------------------------------

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_readme_fixedpoint_example_prints_what_it_says() -> None:
    """Each line of the primitives example evaluates to the repr its comment shows."""
    block = README.split("from qlane.sim import fixedpoint as fp\n")[1].split("```")[0]
    scope: dict[str, Any] = {"fp": qlane.sim.fixedpoint, "np": np}
    checked = 0
    for line in block.strip().splitlines():
        code, _, comment = line.partition("#")
        shown = comment.strip().split(" (=")[0]
        if "=" in code.split("(")[0]:
            exec(code, scope)
            names = code.split("=")[0].split(",")
            got = ", ".join(repr(scope[n.strip()]) for n in names)
        else:
            got = repr(eval(code, scope))
        assert got == shown, line
        checked += 1
    assert checked == 4


def test_readme_command_synopses_match_the_commands() -> None:
    """Every option a synopsis names exists; verify's lists --isa, --seed and --rounding."""
    shell = "".join(re.findall(r"```sh\n(.*?)```", README, re.S))
    synopses = re.findall(r"^qlane (\w+) ((?:.*\n)(?: {6,}.*\n)*)", shell, re.M)
    assert {cmd for cmd, _ in synopses} >= {"inspect", "simulate", "generate", "verify",
                                            "estimate"}
    for cmd, text in synopses:
        known = {o for p in main.commands[cmd].params for o in p.opts}
        named = set(re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", text))
        assert named <= known, (cmd, named - known)
    verify = dict(synopses)["verify"]
    for opt in ("--inputs", "--samples", "--seed", "--rounding", "--isa", "--json"):
        assert opt in verify
    assert "NET_invoke" not in README and "net_invoke" in README
