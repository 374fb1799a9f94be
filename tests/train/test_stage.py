"""Stage plans: --stages parsing, plan files, recipes, flag overrides, the log table."""
import json

import pytest

from utils.common.errors import DataError
from utils.train.config_file import load_plan_file, read_config_file
from utils.train.stages import resolve_stages
from utils.train.stage_scaling import distribute_epochs
from utils.train.stage_table import describe_stages
from utils.train.recipes import RECIPES, get_recipe
from utils.train.stage import KEYS, Stage, parse_stages

SPEC = "epochs=2,size=128,lr=1e-3,train=head;epochs=8,size=224,lr=3e-4,train=all"


def test_parse_design_example():
    s1, s2 = parse_stages(SPEC)
    assert (s1.epochs, s1.size, s1.lr, s1.train) == (2, 128, 1e-3, "head")
    assert (s2.epochs, s2.size, s2.lr, s2.train) == (8, 224, 3e-4, "all")


def test_every_key_parses():
    spec = ("epochs=4,size=96,bs=16,lr=0.1,opt=SGD,momentum=0.8,nesterov=true,wd=5e-4,sched=multistep,"
            "train=3,lr_mult=0.3,warmup=0.5,pct_start=0.25,step=2,gamma=0.5,milestones=0.5/3,"
            "patience=3,factor=0.2,max_drops=1,min_lr=1e-5,drop_rate=0.5,accum=2,bn=frozen,name=warm,"
            "layer_decay=0.7,opt.dampening=0.1")
    (s,) = parse_stages(spec)
    assert s == Stage(epochs=4, size=96, bs=16, lr=0.1, opt="sgd", momentum=0.8, nesterov=True, wd=5e-4,
                      sched="multistep", train="3", lr_mult=0.3, warmup=0.5, pct_start=0.25, step=0.5,
                      gamma=0.5, milestones=(0.5, 0.75), patience=3, factor=0.2, max_drops=1,
                      min_lr=1e-5, drop_rate=0.5, accum=2, bn="frozen", name="warm", layer_decay=0.7,
                      opt_args={"dampening": 0.1})
    assert set(s.to_dict()) == set(KEYS)
    # accum is stored only when it accumulates, so plans written before it existed compare equal
    assert "accum" not in Stage().to_dict() and Stage.from_dict(Stage().to_dict()) == Stage()
    assert "bn" not in Stage().to_dict()  # the same for bn at its default, 'train'
    assert not {"layer_decay", "opt_args"} & set(Stage().to_dict())  # and for these, unset



def test_accum_flag_sets_every_stage():
    plan = resolve_stages(stages="epochs=1,accum=3;epochs=2", accum=None)
    assert [s.accum for s in plan] == [3, 3]
    assert [s.accum for s in resolve_stages(recipe="finetune", epochs=3, accum=4)] == [4, 4]
    with pytest.raises(DataError, match="--accum"):
        resolve_stages(accum=0)
    with pytest.raises(DataError, match="accum"):
        parse_stages("epochs=1,accum=0")


def test_inheritance_from_previous_stage_and_defaults():
    s1, s2, s3 = parse_stages("opt=sgd,lr=0.1,bs=64,name=a,drop_rate=0.5;epochs=3,train=head;lr=0.01",
                              defaults={"size": 96, "epochs": 2})
    assert (s1.size, s1.epochs, s1.wd) == (96, 2, Stage().wd)      # caller defaults, then Stage's
    assert (s2.opt, s2.lr, s2.bs, s2.size, s2.drop_rate) == ("sgd", 0.1, 64, 96, 0.5)
    assert (s3.epochs, s3.train, s3.lr) == (3, "head", 0.01)
    assert (s1.name, s2.name, s3.name) == ("a", "", "")             # names are not inherited


def test_round_trip_through_json():
    plan = parse_stages(SPEC + ";epochs=9,sched=multistep,milestones=3/6,drop_rate=none;sched=step,step=0.25")
    again = [Stage.from_dict(d) for d in json.loads(json.dumps([s.to_dict() for s in plan]))]
    assert again == plan
    assert plan[2].milestones == (1 / 3, 2 / 3)   # epochs from the stage start become fractions
    assert plan[3].milestones == plan[2].milestones  # inherited as fractions of the stage


@pytest.mark.parametrize("spec, parts", [
    ("epochs=2;lrr=1e-3", ["stage 2", "unknown key 'lrr'", "did you mean 'lr'", "valid:", "milestones"]),
    ("epochs=x", ["stage 1", "epochs='x' is not an integer"]),
    ("epochs=1;epochs=2.5", ["stage 2", "epochs='2.5' is not an integer"]),
    ("lr=fast", ["stage 1", "lr='fast' is not a number"]),
    ("epochs=2;epochs=2,opt=rmsprob", ["stage 2", "opt='rmsprob'", "sgd, adam, adamw, schedulefree_adamw"]),
    ("opt=lion,opt.betas=0.9/0.99,opt.bogus=1", ["stage 1", "unknown option(s) bogus", "betas"]),
    ("sched=linear", ["stage 1", "sched='linear'", "const, step, multistep, cosine, onecycle, plateau"]),
    ("train=some", ["stage 1", "train='some'", "'head', 'all'"]),
    ("nesterov=maybe", ["stage 1", "nesterov='maybe'", "true/false"]),
    ("milestones=a/b", ["stage 1", "milestones='a/b'", "0.5/0.75"]),
    ("lr=-1", ["stage 1", "lr=-1.0 must be > 0"]),
    ("epochs=0", ["stage 1", "epochs=0 must be >= 1"]),
    ("momentum=1.5", ["stage 1", "momentum=1.5", "[0, 1)"]),
    ("epochs=4,sched=multistep,milestones=2/4", ["stage 1", "milestones=4", "4 epoch"]),
    ("sched=step", ["stage 1", "sched=step needs step="]),
    ("epochs=2,size", ["stage 1", "'size' needs a name (write key=value)"]),
    (" ; ", ["empty"]),
    ("epochs=2;opt:adam", ["stage 2", "'opt:adam' is not key=value"]),
    ("nesterov=yes,opt=sgd,momentum=0.9;nesterov=off", []),
    ("epochs=2,epochs=3", ["stage 1", "'epochs' given twice"]),
    ("opt=sgd,momentum=0,nesterov=1", ["stage 1", "nesterov", "momentum > 0"]),
])
def test_errors_name_stage_field_and_value(spec, parts):
    if not parts:  # the option language's booleans: yes/no/on/off as well as true/false/1/0
        assert [s.nesterov for s in parse_stages(spec)] == [True, False]
        return
    with pytest.raises(DataError) as e:
        parse_stages(spec)
    msg = str(e.value)
    assert "--stages" in msg
    for p in parts:
        assert p in msg, (p, msg)


def test_all_problems_reported_together():
    with pytest.raises(DataError) as e:
        parse_stages("epochs=x,lrr=1;opt=foo")
    msg = str(e.value)
    assert "3 problem(s)" in msg and "stage 1: epochs" in msg and "stage 1: unknown key 'lrr'" in msg
    assert "stage 2: opt='foo'" in msg


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_plan_file(tmp_path, suffix):
    stages = [{"epochs": 2, "size": 64, "train": "head", "lr": 1e-3},
              {"epochs": 3, "train": 2, "milestones": [0.5, 0.75], "sched": "multistep"}]
    for i, data in enumerate([{"stages": stages, "arch": "resnet18"}, stages]):
        path = tmp_path / f"plan{i}{suffix}"
        if suffix == ".json":
            path.write_text(json.dumps(data))
        else:
            import yaml
            path.write_text(yaml.safe_dump(data))
        plan = load_plan_file(path)
        assert plan == parse_stages("epochs=2,size=64,train=head,lr=1e-3;"
                                    "epochs=3,train=2,milestones=0.5/0.75,sched=multistep")


def test_plan_file_errors_name_file_and_stage(tmp_path):
    path = tmp_path / "plan.yaml"
    path.write_text("stages:\n  - {epochs: 2}\n  - {epochs: two}\n")
    with pytest.raises(DataError, match=r"plan\.yaml(.|\n)*stage 2: epochs='two' is not an integer"):
        load_plan_file(path)
    path.write_text("stages: [epochs: 2\n")
    with pytest.raises(DataError, match=r"plan\.yaml: not valid YAML"):
        load_plan_file(path)
    path.write_text("arch: resnet18\n")
    with pytest.raises(DataError, match="expected a 'stages' list"):
        load_plan_file(path)
    path.write_text("recipe: vgg\nstages: [{epochs: 2}]\n")
    with pytest.raises(DataError, match="'stages' or 'recipe', not both"):
        load_plan_file(path)
    path.write_text("stages: 3\n")
    with pytest.raises(DataError, match="'stages' must be a list"):
        load_plan_file(path)
    path.write_text("just text\n")
    with pytest.raises(DataError, match="expected a mapping"):
        read_config_file(path)
    with pytest.raises(DataError, match="cannot read"):
        load_plan_file(tmp_path / "missing.json")


# ----- recipes --------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipes_scale_to_a_small_run(name):
    plan = get_recipe(name)(epochs=6, size=96)
    assert sum(s.epochs for s in plan) == 6
    assert plan[-1].size == 96 and all(s.size <= 96 and s.size % 32 == 0 for s in plan)
    assert [Stage.from_dict(s.to_dict()) for s in plan] == plan   # every recipe stage is valid
    default = get_recipe(name)()
    assert sum(s.epochs for s in default) == RECIPES[name].epochs
    assert default[-1].size == RECIPES[name].size


def test_recipes_from_the_papers():
    (alex,) = resolve_stages("alexnet", epochs=6, size=96)
    assert (alex.opt, alex.momentum, alex.wd, alex.bs, alex.lr, alex.sched, alex.factor, alex.max_drops) == \
        ("sgd", 0.9, 5e-4, 128, 0.01, "plateau", 0.1, 3)
    (res,) = resolve_stages("resnet", epochs=6, size=96)
    assert (res.opt, res.lr, res.momentum, res.wd, res.bs, res.sched, res.gamma) == \
        ("sgd", 0.1, 0.9, 1e-4, 256, "step", 0.1)
    assert res.step * res.epochs == pytest.approx(2)       # /10 every third of the run
    v1, v2 = resolve_stages("vgg", epochs=6, size=96)
    assert (v1.size, v2.size, v1.lr, v2.lr) == (64, 96, 0.01, 0.001)
    for v in (v1, v2):
        assert (v.opt, v.momentum, v.wd, v.bs, v.drop_rate, v.sched, v.factor, v.max_drops) == \
            ("sgd", 0.9, 5e-4, 256, 0.5, "plateau", 0.1, 3)
    v1, v2 = resolve_stages("vgg")
    assert (v1.size, v2.size) == (256, 384)
    (dn,) = resolve_stages("densenet", epochs=8)
    assert (dn.opt, dn.nesterov, dn.momentum, dn.lr, dn.wd, dn.sched, dn.milestones, dn.gamma) == \
        ("sgd", True, 0.9, 0.1, 1e-4, "multistep", (0.5, 0.75), 0.1)


def test_finetune_and_gradual_unfreezing_are_one_flag_apart():
    ft = resolve_stages(epochs=8, size=96)                   # the default recipe
    assert ft == resolve_stages("finetune", epochs=8, size=96)
    assert [(s.train, s.epochs, s.size) for s in ft] == [("head", 1, 64), ("all", 7, 96)]
    assert ft[0].lr > ft[1].lr and ft[1].lr_mult < 1 and ft[0].opt == "adamw"
    gu = resolve_stages("unfreeze-gradual", epochs=8, size=96)
    assert [s.train for s in gu] == ["head", "1", "2", "3", "all"]
    assert sum(s.epochs for s in gu) == 8
    assert gu[0] == ft[0]
    for s in gu[1:]:   # the same optimizer, lr and size as finetune's unfrozen stage
        assert (s.opt, s.lr, s.lr_mult, s.wd, s.sched, s.size, s.bs) == \
            (ft[1].opt, ft[1].lr, ft[1].lr_mult, ft[1].wd, ft[1].sched, ft[1].size, ft[1].bs)


def test_bs_ramp_grows_the_batch_at_constant_lr():
    plan = resolve_stages("bs-ramp", epochs=6, size=96)
    bss = [s.bs for s in plan]
    assert bss == sorted(bss) and bss[-1] == 4 * bss[0] and len(set(bss)) == 3
    assert len({s.lr for s in plan}) == 1 and all(s.sched == "const" for s in plan)
    small = resolve_stages("bs-ramp", epochs=6, size=96, bs=32)   # --bs is the largest batch
    assert [s.bs for s in small] == [8, 16, 32]
    assert small[0].lr == pytest.approx(plan[0].lr / 8)


def test_unknown_recipe_lists_names_and_too_few_epochs():
    with pytest.raises(DataError) as e:
        resolve_stages("resnett")
    assert "did you mean 'resnet'" in str(e.value) and all(n in str(e.value) for n in RECIPES)
    with pytest.raises(DataError, match="needs --epochs >= 5"):
        resolve_stages("unfreeze-gradual", epochs=3)


@pytest.mark.slow
def test_too_few_epochs_for_the_recipe_shows_a_one_stage_plan_that_runs(tmp_path):
    import json
    import shlex

    from conftest import write_dataset
    from helpers import train
    data = write_dataset(tmp_path / "data", n=16, size=16)
    r = train(data, tmp_path / "runs", "--epochs", "1", "--size", "32", check=False)
    assert r.returncode == 2 and "needs --epochs >= 2" in r.stderr and not (tmp_path / "runs").exists()
    hint = r.stderr.split("e.g. ", 1)[1].split(" (the whole", 1)[0]
    assert hint == '--stages "epochs=1,size=32,train=all"'
    train(data, tmp_path / "runs", *shlex.split(hint), "--epochs", "1")  # the example, as typed, trains one epoch
    cfg = json.loads((tmp_path / "runs" / "r" / "config.json").read_text())
    assert [(s["epochs"], s["size"], s["train"]) for s in cfg["stages"]] == [(1, 32, "all")]


# ----- flags ----------------------------------------------------------------------------

def test_bs_linear_scaling_rule():
    (res,) = resolve_stages("resnet", bs=32)
    assert res.bs == 32 and res.lr == pytest.approx(0.1 * 32 / 256)
    ft = resolve_stages("finetune", bs=16)
    ref = resolve_stages("finetune")
    for a, b in zip(ft, ref):
        assert a.bs == b.bs // 2 and a.lr == pytest.approx(b.lr / 2)
    plan = resolve_stages(stages="bs=64,lr=0.1,min_lr=1e-3;bs=128", bs=256)
    assert [s.bs for s in plan] == [128, 256]
    assert [s.lr for s in plan] == pytest.approx([0.2, 0.2]) and plan[0].min_lr == pytest.approx(2e-3)


def test_bs_without_a_batch_in_the_plan_just_sets_it():
    plan = resolve_stages(stages="lr=0.01;lr=0.001", bs=8)
    assert [(s.bs, s.lr) for s in plan] == [(8, 0.01), (8, 0.001)]


def test_lr_sets_the_last_stage_and_keeps_ratios():
    plan = resolve_stages(stages=SPEC, lr=6e-4, bs=16)   # bs scales first, then --lr is exact
    assert plan[-1].lr == pytest.approx(6e-4)
    assert plan[0].lr / plan[1].lr == pytest.approx(1e-3 / 3e-4)


def test_size_scales_earlier_stages():
    plan = resolve_stages(stages="size=128;size=192;size=256", size=128)
    assert [s.size for s in plan] == [64, 96, 128]
    plan = resolve_stages(stages="size=160;size=224", size=100)   # the final size is taken as given
    assert [s.size for s in plan] == [64, 100]
    plan = resolve_stages(stages="size=128;size=224", size=24)    # tiny: never above the final size
    assert [s.size for s in plan] == [24, 24]


def test_epochs_distributed_in_proportion():
    plan = resolve_stages(stages="epochs=2,warmup=2,sched=multistep,milestones=1;epochs=8", epochs=5)
    assert [s.epochs for s in plan] == [1, 4]
    assert plan[0].warmup == 1 and plan[0].milestones == (0.5,)   # fractions follow the epochs
    with pytest.raises(DataError, match="fewer than the plan's 2 stages"):
        resolve_stages(stages=SPEC, epochs=1)


@pytest.mark.parametrize("total, weights, expected", [
    (10, [1, 9], [1, 9]), (5, [2, 8], [1, 4]), (3, [1, 1, 1], [1, 1, 1]), (7, [1, 1, 1], [3, 2, 2]),
    (6, [1, 100], [1, 5]), (100, [30, 30, 30], [34, 33, 33]), (4, [1, 1, 1, 1, 90][:4], [1, 1, 1, 1]),
])
def test_distribute_epochs(total, weights, expected):
    parts = distribute_epochs(total, weights)
    assert parts == expected and sum(parts) == total and min(parts) >= 1


def test_distribute_epochs_matches_brute_force():
    # reference: of all splits with at least 1 epoch per stage, the closest (squared error)
    # to the proportional share
    import itertools
    for total in range(3, 16):
        for weights in itertools.product([1, 2, 5, 13], repeat=3):
            ideal = [total * w / sum(weights) for w in weights]
            err = lambda parts: sum((p - x) ** 2 for p, x in zip(parts, ideal))
            best = min(err(c) for c in itertools.product(range(1, total + 1), repeat=3) if sum(c) == total)
            parts = distribute_epochs(total, list(weights))
            assert sum(parts) == total and min(parts) >= 1
            assert err(parts) == pytest.approx(best), (total, weights, parts)


def test_one_source_only_and_bad_flags():
    with pytest.raises(DataError, match="--recipe and --stages"):
        resolve_stages("resnet", stages=SPEC)
    with pytest.raises(DataError, match="--epochs 'x' is not an integer"):
        resolve_stages(epochs="x")
    with pytest.raises(DataError, match="--lr -1 must be > 0"):
        resolve_stages(lr=-1)


def test_config_file_sources(tmp_path):
    plan_file, settings, named = tmp_path / "plan.json", tmp_path / "settings.yaml", tmp_path / "named.yml"
    plan_file.write_text(json.dumps({"stages": [{"epochs": 3, "lr": 0.05}], "arch": "resnet18"}))
    settings.write_text("arch: resnet18\nepochs: 6\n")
    named.write_text("recipe: resnet\n")
    assert read_config_file(plan_file)["arch"] == "resnet18"
    assert [s.lr for s in resolve_stages(config_file=plan_file)] == [0.05]
    # the command line wins over the file's stages
    assert resolve_stages("vgg", config_file=plan_file) == resolve_stages("vgg")
    assert resolve_stages(stages=SPEC, config_file=plan_file) == parse_stages(SPEC)
    # a file without stages: its recipe, or the default one
    assert resolve_stages(config_file=named, epochs=6) == resolve_stages("resnet", epochs=6)
    assert resolve_stages(config_file=settings) == resolve_stages("finetune")


def test_precedence_defaults_then_plan_then_flags(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"stages": [{"epochs": 3, "lr": 0.05}]}))
    (s,) = resolve_stages(config_file=path, defaults={"size": 96, "lr": 0.2, "opt": "sgd"})
    assert (s.size, s.lr, s.opt, s.epochs) == (96, 0.05, "sgd", 3)
    (s,) = resolve_stages(config_file=path, defaults={"size": 96}, lr=0.01, size=64, epochs=2)
    assert (s.size, s.lr, s.epochs) == (64, 0.01, 2)


def test_describe_plan_is_aligned():
    plan = resolve_stages("vgg", epochs=6, size=96)
    lines = describe_stages(plan).splitlines()
    assert len(lines) == 1 + len(plan)
    col = lines[0].index("lr ")
    assert [ln[col:].split()[0] for ln in lines[1:]] == ["0.01", "0.001"]
    assert "plateau" in lines[1] and "S256" in lines[1] and "0.5" in lines[1]
