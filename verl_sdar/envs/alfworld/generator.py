"""Deterministic generator of ALFWorld games for the real TextWorld PDDL engine, offline.

The ``alfworld`` wheel ships the PDDL domain (``alfred.pddl``) and the text grammar
(``alfred.twl2``) but no games; the official games come from ALFRED's THOR scenes and need a
download. This module writes games of the same kind from small synthetic scenes:

- a *layout* is a room (kitchen, living room, bedroom, bathroom) with a fixed set of receptacles,
  their locations, and (bedroom, living room) a desk lamp standing in one of them;
- a *task* is a layout plus a task type, a goal (object type, receptacle type or lamp), and the
  objects placed in it (the target object(s) and distractors);
- every task is played to the end by alfworld's planner expert (fast-downward, through
  TextWorld) before it is kept: a task the expert does not win is logged and dropped.

Files follow ALFWorld's layout so alfworld's own ``AlfredTWEnv`` (and verl-agent) find them::

    OUT/logic/alfred.pddl, OUT/logic/alfred.twl2           (copied from the wheel)
    OUT/json_2.1.1/{train,valid_seen,valid_unseen}/<task_type>-<Obj>-None-<Recep>-<layout>/
        trial_<seed>_<split>_<index>/{traj_data.json, initial_state.pddl, game.tw-pddl}
    OUT/manifest.jsonl                                      (one line per kept game)

Splits mirror ALFRED's: ``train`` and ``valid_seen`` share layouts and goal combinations
(new object placements); ``valid_unseen`` uses held-out layouts *and* held-out
(object, receptacle-or-lamp) goal combinations, none of which appear in the other splits.
Everything is a function of the arguments: the same seed and counts write byte-identical files.
Task ``index`` of a split is drawn from ``(seed, split, index, attempt)`` alone; the attempt
only moves on past an unsolvable draw or a duplicate of a game already kept.

Room, receptacle and object *vocabularies* are ours; which receptacle can hold which object
and which objects are cleanable/heatable/coolable/toggleable come from alfworld's own
``alfworld.gen.constants`` at run time, so the games agree with the official ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from collections.abc import Callable

from verl_sdar.envs.alfworld.play import TASK_TYPES, AlfworldEnv, run_expert

GENERATOR_VERSION = 1
SPLITS = ("train", "valid_seen", "valid_unseen")
ROOMS = ("kitchen", "livingroom", "bedroom", "bathroom")
LAMP = "DeskLamp"
#: Receptacle types whose instances are ``Sink|...|SinkBasin``-style ids in ALFRED (the display
#: name "sinkbasin" is derived from the id, and alfworld's hand-coded expert relies on it).
BASIN_PREFIX = {"SinkBasin": "Sink", "BathtubBasin": "Bathtub"}


@dataclass(frozen=True)
class RoomSpec:
    """What a room of one kind may contain.

    ``required``/``optional`` map a receptacle type to the (min, max) number of instances;
    ``n_optional`` is how many optional types a layout takes; ``lamp_hosts`` are receptacle
    types that may hold the desk lamp (rooms without them have no lamp)."""

    number_base: int
    required: dict
    optional: dict
    n_optional: tuple
    objects: tuple
    lamp_hosts: tuple = ()


ROOM_SPECS = {
    "kitchen": RoomSpec(
        number_base=0,
        required={"CounterTop": (1, 2), "Fridge": (1, 1), "Microwave": (1, 1), "SinkBasin": (1, 1), "Cabinet": (1, 3)},
        optional={"Drawer": (1, 3), "StoveBurner": (1, 2), "DiningTable": (1, 1), "CoffeeMachine": (1, 1),
                  "GarbageCan": (1, 1), "Shelf": (1, 2), "SideTable": (1, 1)},
        n_optional=(1, 3),
        objects=("Apple", "Bread", "Egg", "Lettuce", "Potato", "Tomato", "Mug", "Cup", "Bowl", "Plate", "Pan", "Pot",
                 "Kettle", "Fork", "Spoon", "Knife", "ButterKnife", "Spatula", "Ladle", "DishSponge", "SaltShaker",
                 "PepperShaker", "SoapBottle", "WineBottle"),
    ),
    "livingroom": RoomSpec(
        number_base=200,
        required={"Sofa": (1, 1), "CoffeeTable": (1, 1), "SideTable": (1, 2)},
        optional={"ArmChair": (1, 2), "TVStand": (1, 1), "Shelf": (1, 2), "Drawer": (1, 2), "Cabinet": (1, 2),
                  "GarbageCan": (1, 1), "Dresser": (1, 1), "DiningTable": (1, 1), "Ottoman": (1, 1), "Safe": (1, 1)},
        n_optional=(2, 4),
        objects=("Book", "Box", "CellPhone", "CreditCard", "KeyChain", "Laptop", "Newspaper", "Pillow",
                 "RemoteControl", "Statue", "Vase", "Watch", "TissueBox", "WateringCan", "Bowl", "Plate", "Candle"),
        lamp_hosts=("SideTable", "Dresser", "Shelf"),
    ),
    "bedroom": RoomSpec(
        number_base=300,
        required={"Bed": (1, 1), "Desk": (1, 1), "Drawer": (1, 3)},
        optional={"Dresser": (1, 1), "Shelf": (1, 2), "GarbageCan": (1, 1), "LaundryHamper": (1, 1), "Safe": (1, 1),
                  "ArmChair": (1, 1), "SideTable": (1, 2), "Cabinet": (1, 2)},
        n_optional=(1, 3),
        objects=("AlarmClock", "BaseballBat", "BasketBall", "Book", "CD", "CellPhone", "CreditCard", "KeyChain",
                 "Laptop", "Mug", "Pen", "Pencil", "Pillow", "TennisRacket", "Watch", "Cloth", "Bowl"),
        lamp_hosts=("Desk", "SideTable", "Dresser"),
    ),
    "bathroom": RoomSpec(
        number_base=400,
        required={"Toilet": (1, 1), "SinkBasin": (1, 2), "CounterTop": (1, 1)},
        optional={"BathtubBasin": (1, 1), "Cabinet": (1, 3), "Drawer": (1, 2), "GarbageCan": (1, 1),
                  "HandTowelHolder": (1, 1), "TowelHolder": (1, 1), "ToiletPaperHanger": (1, 1), "Shelf": (1, 2),
                  "Cart": (1, 1), "Dresser": (1, 1)},
        n_optional=(2, 4),
        objects=("Candle", "Cloth", "DishSponge", "HandTowel", "Plunger", "SoapBar", "SoapBottle", "SprayBottle",
                 "TissueBox", "ToiletPaper", "Towel"),
    ),
}

#: Receptacle types a goal may not name as the final place for each task type (the appliance
#: the task uses, and containers that make the text odd).
EXCLUDED_PARENTS = {
    "pick_and_place_simple": (),
    "pick_two_obj_and_place": (),
    "pick_clean_then_place_in_recep": ("SinkBasin", "BathtubBasin"),
    "pick_heat_then_place_in_recep": ("Microwave", "Fridge"),
    "pick_cool_then_place_in_recep": ("Fridge", "Microwave"),
    "look_at_obj_in_light": (),
}
#: Object properties a task type needs, and the appliance that must be in the room.
NEEDS = {
    "pick_clean_then_place_in_recep": ("Cleanable", "SinkBasin"),
    "pick_heat_then_place_in_recep": ("Heatable", "Microwave"),
    "pick_cool_then_place_in_recep": ("Coolable", "Fridge"),
}

LAYOUTS_PER_ROOM = 12
UNSEEN_LAYOUTS_PER_ROOM = 3
UNSEEN_COMBO_FRACTION = 0.25


# ---------------------------------------------------------------------------------------------
# alfworld's object knowledge (read at run time from the installed wheel)


class Knowledge:
    """Which receptacle types can hold which object types, and object properties, from
    ``alfworld.gen.constants``; plus the otype/rtype vocabularies every problem declares."""

    def __init__(self):
        import alfworld.gen.constants as c

        self.can_contain = {r: frozenset(objs) for r, objs in c.VAL_RECEPTACLE_OBJECTS.items()}
        self.props = {k: frozenset(v) for k, v in c.VAL_ACTION_OBJECTS.items()}
        self.openable = frozenset(c.OPENABLE_CLASS_LIST)
        static = set(c.RECEPTACLES) - set(c.MOVABLE_RECEPTACLES)
        self.rtypes = tuple(sorted(static))
        self.otypes = tuple(sorted(set(c.OBJECTS) - static))

    def holds(self, recep_type: str, obj_type: str) -> bool:
        return obj_type in self.can_contain.get(recep_type, ())

    def has(self, prop: str, obj_type: str) -> bool:
        return obj_type in self.props.get(prop, ())


_KNOWLEDGE: Knowledge | None = None


def knowledge() -> Knowledge:
    global _KNOWLEDGE
    if _KNOWLEDGE is None:
        _KNOWLEDGE = Knowledge()
    return _KNOWLEDGE


# ---------------------------------------------------------------------------------------------
# scene and task specs


@dataclass(frozen=True)
class Receptacle:
    id: str       # PDDL id, e.g. Cabinet_bar__minus_01_dot_20_bar__plus_00_dot_50_bar__minus_02_dot_31
    type: str     # e.g. Cabinet
    loc: str      # PDDL location id, e.g. loc_bar__minus_4_bar_9_bar_2_bar_45


@dataclass(frozen=True)
class Layout:
    layout_id: str          # e.g. kitchen07
    room: str
    scene_num: int          # ALFRED-style number: kitchens 1-30, living rooms 201-, bedrooms 301-, bathrooms 401-
    receptacles: tuple      # of Receptacle
    start: str              # agent's start location
    lamp_in: str | None     # id of the receptacle holding the desk lamp
    lamp_id: str | None

    def types(self) -> set:
        return {r.type for r in self.receptacles}


@dataclass
class Placed:
    id: str
    type: str
    recep: str   # receptacle id


@dataclass
class TaskSpec:
    task_id: str
    split: str
    index: int
    task_type: str
    layout: Layout
    object_target: str
    parent_target: str      # receptacle type ('' for look_at_obj_in_light)
    toggle_target: str      # 'DeskLamp' for look_at_obj_in_light, else ''
    objects: list = field(default_factory=list)   # of Placed
    goal_text: str = ""

    @property
    def combo(self) -> tuple:
        return (self.object_target, self.parent_target or self.toggle_target)

    @property
    def dirname(self) -> str:
        goal = self.parent_target or self.toggle_target
        return "%s-%s-None-%s-%s" % (self.task_type, self.object_target, goal, self.layout.layout_id)

    @property
    def trialname(self) -> str:
        return "trial_%s" % self.task_id


def _mangle(text: str) -> str:
    """ALFRED's object-id escaping for PDDL ('|' -> _bar_, '-' -> _minus_, ...)."""
    for a, b in (("-", "_minus_"), ("|", "_bar_"), ("+", "_plus_"), (".", "_dot_"), (",", "_comma_")):
        text = text.replace(a, b)
    return text


def _coord(rng: random.Random, lo: float, hi: float) -> str:
    v = rng.uniform(lo, hi)
    return "%s%05.2f" % ("-" if v < 0 else "+", abs(v))


def _entity_id(rng: random.Random, type_: str, used: set) -> str:
    while True:
        raw = "%s|%s|%s|%s" % (type_, _coord(rng, -4, 4), _coord(rng, 0, 2), _coord(rng, -4, 4))
        if type_ in BASIN_PREFIX:
            raw = "%s|%s|%s|%s|%s" % (BASIN_PREFIX[type_], _coord(rng, -4, 4), _coord(rng, 0, 2),
                                      _coord(rng, -4, 4), type_)
        ident = _mangle(raw)
        if ident.lower() not in used:
            used.add(ident.lower())
            return ident


def _location(rng: random.Random, used: set) -> str:
    while True:
        loc = "loc|%d|%d|%d|%d" % (rng.randint(-12, 12), rng.randint(-12, 12), rng.choice((0, 1, 2, 3)),
                                   rng.choice((0, 15, 30, 45, 60)))
        if loc not in used:
            used.add(loc)
            return _mangle(loc)


def make_layout(room: str, k: int, seed: int) -> Layout:
    """Layout ``k`` of ``room`` (deterministic in ``seed``)."""
    spec = ROOM_SPECS[room]
    rng = random.Random("layout:%d:%s:%d" % (seed, room, k))
    counts = {t: rng.randint(*mm) for t, mm in spec.required.items()}
    optional = sorted(spec.optional)
    for t in rng.sample(optional, rng.randint(*spec.n_optional)):
        counts[t] = rng.randint(*spec.optional[t])
    if spec.lamp_hosts and not any(t in counts for t in spec.lamp_hosts):
        counts[spec.lamp_hosts[0]] = 1
    used_ids, used_locs = set(), set()
    receps = []
    for t in sorted(counts):
        for _ in range(counts[t]):
            receps.append(Receptacle(_entity_id(rng, t, used_ids), t, _location(rng, used_locs)))
    start = _location(rng, used_locs)
    lamp_in = lamp_id = None
    if spec.lamp_hosts:
        hosts = [r for r in receps if r.type in spec.lamp_hosts]
        lamp_in = rng.choice(hosts).id
        lamp_id = _entity_id(rng, LAMP, used_ids)
    rng.shuffle(receps)  # the order of the PDDL facts varies too
    return Layout("%s%02d" % (room, k + 1), room, spec.number_base + k + 1, tuple(receps), start, lamp_in, lamp_id)


def all_layouts(seed: int) -> list[Layout]:
    return [make_layout(room, k, seed) for room in ROOMS for k in range(LAYOUTS_PER_ROOM)]


# ---------------------------------------------------------------------------------------------
# goal combinations and the split plan


def _placeable(layout: Layout, obj: str, avoid_type: str = "") -> list[Receptacle]:
    kn = knowledge()
    return [r for r in layout.receptacles if kn.holds(r.type, obj) and r.type != avoid_type]


def feasible_combos(task_type: str, layout: Layout) -> set:
    """(object type, receptacle type or lamp) goals that ``task_type`` can have in ``layout``."""
    kn = knowledge()
    spec = ROOM_SPECS[layout.room]
    types = layout.types()
    out = set()
    if task_type == "look_at_obj_in_light":
        if layout.lamp_id:
            out = {(o, LAMP) for o in spec.objects if _placeable(layout, o)}
        return out
    if task_type in NEEDS:
        prop, appliance = NEEDS[task_type]
        if appliance not in types:
            return set()
        objs = [o for o in spec.objects if kn.has(prop, o)]
    else:
        objs = list(spec.objects)
    for o in objs:
        for rt in types:
            if rt in EXCLUDED_PARENTS[task_type] or not kn.holds(rt, o):
                continue
            # the target object must be able to start somewhere that is not the goal receptacle type
            if _placeable(layout, o, avoid_type=rt):
                out.add((o, rt))
    return out


@dataclass
class SplitPlan:
    seed: int
    layouts: dict                 # layout_id -> Layout
    seen_layouts: tuple           # train + valid_seen
    unseen_layouts: tuple         # valid_unseen only
    heldout_combos: frozenset     # (obj, recep-or-lamp) pairs used only by valid_unseen

    def layouts_for(self, split: str) -> list[Layout]:
        ids = self.unseen_layouts if split == "valid_unseen" else self.seen_layouts
        return [self.layouts[i] for i in ids]

    def combos_for(self, split: str, task_type: str, layout: Layout) -> list:
        combos = feasible_combos(task_type, layout)
        if split == "valid_unseen":
            combos &= self.heldout_combos
        else:
            combos -= self.heldout_combos
        return sorted(combos)

    def to_json(self) -> dict:
        return {"seed": self.seed, "seen_layouts": list(self.seen_layouts),
                "unseen_layouts": list(self.unseen_layouts),
                "heldout_combos": sorted(list(c) for c in self.heldout_combos)}


def make_split_plan(seed: int) -> SplitPlan:
    """Hold out ``UNSEEN_LAYOUTS_PER_ROOM`` layouts of every room kind and, for every task type,
    a ``UNSEEN_COMBO_FRACTION`` share of the goal combinations that held-out layouts allow."""
    layouts = all_layouts(seed)
    rng = random.Random("split:%d" % seed)
    seen, unseen = [], []
    for room in ROOMS:
        ids = sorted(lay.layout_id for lay in layouts if lay.room == room)
        rng.shuffle(ids)
        unseen += sorted(ids[:UNSEEN_LAYOUTS_PER_ROOM])
        seen += sorted(ids[UNSEEN_LAYOUTS_PER_ROOM:])
    by_id = {lay.layout_id: lay for lay in layouts}
    heldout = set()
    for tt in TASK_TYPES:
        in_unseen = set().union(*(feasible_combos(tt, by_id[i]) for i in unseen))
        in_seen = set().union(*(feasible_combos(tt, by_id[i]) for i in seen))
        pool = sorted(in_unseen & in_seen)
        rng.shuffle(pool)
        heldout.update(pool[:max(2, round(UNSEEN_COMBO_FRACTION * len(pool)))])
    plan = SplitPlan(seed, by_id, tuple(seen), tuple(unseen), frozenset(heldout))
    for tt in TASK_TYPES:  # every split must be able to hold every task type
        for split in SPLITS:
            if not any(plan.combos_for(split, tt, lay) for lay in plan.layouts_for(split)):
                raise RuntimeError("split plan for seed %d leaves no %s task for %s" % (seed, tt, split))
    return plan


# ---------------------------------------------------------------------------------------------
# sampling one task


def sample_task(plan: SplitPlan, split: str, index: int, attempt: int = 0) -> TaskSpec:
    """Task ``index`` of ``split`` (task types cycle in ``TASK_TYPES`` order); ``attempt`` > 0
    gives another draw for the same slot (after a duplicate or an unsolvable draw)."""
    import alfworld.gen.goal_library as glib

    task_type = TASK_TYPES[index % len(TASK_TYPES)]
    rng = random.Random("task:%d:%s:%d:%d" % (plan.seed, split, index, attempt))
    layouts = [lay for lay in plan.layouts_for(split) if plan.combos_for(split, task_type, lay)]
    layout = rng.choice(layouts)
    obj, goal = rng.choice(plan.combos_for(split, task_type, layout))
    parent = "" if task_type == "look_at_obj_in_light" else goal
    toggle = LAMP if task_type == "look_at_obj_in_light" else ""

    used = {r.id.lower() for r in layout.receptacles} | ({layout.lamp_id.lower()} if layout.lamp_id else set())
    placed: list[Placed] = []

    def put(obj_type: str, avoid: str = "") -> None:
        hosts = _placeable(layout, obj_type, avoid_type=avoid)
        placed.append(Placed(_entity_id(rng, obj_type, used), obj_type, rng.choice(hosts).id))

    # target object(s): never already in a receptacle of the goal type
    n_targets = 2 if task_type == "pick_two_obj_and_place" else 1
    n_targets += 1 if rng.random() < 0.3 else 0
    for _ in range(n_targets):
        put(obj, avoid=parent)
    # distractors: other object types of the room (never the target type), anywhere they fit
    spec = ROOM_SPECS[layout.room]
    others = [o for o in spec.objects if o != obj and _placeable(layout, o)]
    for o in rng.sample(others, min(len(others), rng.randint(2, 6))):
        for _ in range(1 if rng.random() < 0.8 else 2):
            put(o)
    rng.shuffle(placed)

    template = rng.choice(glib.gdict[task_type]["templates"])
    goal_text = template.format(obj=obj.lower(), recep=parent.lower(), toggle=toggle.lower(), mrecep="")
    task_id = "%s_%s_%05d" % (plan.seed, split, index)
    return TaskSpec(task_id, split, index, task_type, layout, obj, parent, toggle, placed, goal_text)


def signature(task: TaskSpec) -> str:
    """What makes two tasks the same game (used to drop duplicates across all splits)."""
    objs = sorted((p.type, p.recep) for p in task.objects)
    payload = json.dumps([task.task_type, task.layout.layout_id, task.combo, objs])
    return hashlib.sha1(payload.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# writers


def _goal_pddl(task: TaskSpec) -> str:
    o, r = task.object_target, task.parent_target
    if task.task_type == "look_at_obj_in_light":
        return ("(and\n"
                "  (exists (?ot - object ?r - receptacle ?a - agent ?l - location)\n"
                "    (and (objectType ?ot %sType) (toggleable ?ot) (isToggled ?ot)\n"
                "         (receptacleAtLocation ?r ?l) (atLocation ?a ?l) (inReceptacle ?ot ?r)))\n"
                "  (exists (?o - object ?a - agent) (and (objectType ?o %sType) (holds ?a ?o))))"
                % (task.toggle_target, o))
    if task.task_type == "pick_two_obj_and_place":
        return ("(and\n"
                "  (exists (?r - receptacle ?o1 - object ?o2 - object)\n"
                "    (and (receptacleType ?r %sType) (objectType ?o1 %sType) (objectType ?o2 %sType)\n"
                "         (not (= ?o1 ?o2)) (inReceptacle ?o1 ?r) (inReceptacle ?o2 ?r))))" % (r, o, o))
    state = {"pick_clean_then_place_in_recep": "(cleanable ?o) (isClean ?o)",
             "pick_heat_then_place_in_recep": "(heatable ?o) (isHot ?o)",
             "pick_cool_then_place_in_recep": "(coolable ?o) (isCool ?o)",
             "pick_and_place_simple": ""}[task.task_type]
    return ("(and\n"
            "  (exists (?r - receptacle ?o - object)\n"
            "    (and (receptacleType ?r %sType) (objectType ?o %sType) (inReceptacle ?o ?r)%s)))"
            % (r, o, " " + state if state else ""))


def problem_pddl(task: TaskSpec) -> str:
    """The PDDL problem (ALFWorld's ``initial_state.pddl``) of a task."""
    kn = knowledge()
    lay = task.layout
    rloc = {r.id: r.loc for r in lay.receptacles}
    locs = sorted({r.loc for r in lay.receptacles} | {lay.start})
    objects = list(task.objects)
    # the desk lamp is furniture: present in every task of a layout that has one
    lamp = Placed(lay.lamp_id, LAMP, lay.lamp_in) if lay.lamp_id else None
    lines = ["(define (problem plan_%s)" % task.task_id, "  (:domain alfred)", "  (:objects", "    agent1 - agent"]
    lines += ["    %sType - otype" % t for t in kn.otypes]
    lines += ["    %sType - rtype" % t for t in kn.rtypes]
    lines += ["    %s - object" % p.id for p in objects + ([lamp] if lamp else [])]
    lines += ["    %s - receptacle" % r.id for r in lay.receptacles]
    lines += ["    %s - location" % loc for loc in locs]
    lines += ["  )", "  (:init", "    (atLocation agent1 %s)" % lay.start]
    for r in lay.receptacles:
        lines.append("    (receptacleType %s %sType)" % (r.id, r.type))
        lines.append("    (receptacleAtLocation %s %s)" % (r.id, r.loc))
        if r.type in kn.openable:
            lines.append("    (openable %s)" % r.id)
    for p in objects:
        lines += ["    (objectType %s %sType)" % (p.id, p.type), "    (pickupable %s)" % p.id,
                  "    (inReceptacle %s %s)" % (p.id, p.recep), "    (objectAtLocation %s %s)" % (p.id, rloc[p.recep])]
        for prop, pred in (("Cleanable", "cleanable"), ("Heatable", "heatable"), ("Coolable", "coolable")):
            if kn.has(prop, p.type):
                lines.append("    (%s %s)" % (pred, p.id))
    if lamp:
        lines += ["    (objectType %s %sType)" % (lamp.id, LAMP), "    (toggleable %s)" % lamp.id,
                  "    (inReceptacle %s %s)" % (lamp.id, lamp.recep),
                  "    (objectAtLocation %s %s)" % (lamp.id, rloc[lamp.recep])]
    otypes_here = sorted({p.type for p in objects})
    for rt in sorted(lay.types()):
        for ot in otypes_here:
            if kn.holds(rt, ot):
                lines.append("    (canContain %sType %sType)" % (rt, ot))
    lines += ["  )", "  (:goal %s)" % _goal_pddl(task).replace("\n", "\n    "), ")", ""]
    return "\n".join(lines)


def traj_data(task: TaskSpec, expert_actions: list[str]) -> dict:
    """The parts of ALFRED's ``traj_data.json`` that ALFWorld's text side reads, plus our
    provenance under ``sdar_generator``."""
    return {
        "task_id": task.task_id,
        "task_type": task.task_type,
        "pddl_params": {"object_target": task.object_target, "parent_target": task.parent_target,
                        "toggle_target": task.toggle_target, "mrecep_target": "", "object_sliced": False},
        "scene": {"floor_plan": "FloorPlan%d" % task.layout.scene_num, "scene_num": task.layout.scene_num,
                  "room_type": task.layout.room},
        "turk_annotations": {"anns": [{"assignment_id": "generated", "task_desc": task.goal_text,
                                       "high_descs": [], "votes": []}]},
        "sdar_generator": {"version": GENERATOR_VERSION, "split": task.split, "index": task.index,
                           "layout": task.layout.layout_id, "combo": list(task.combo),
                           "expert": "planner", "expert_steps": len(expert_actions)},
    }


def game_data(task: TaskSpec, domain: str, grammar: str, walkthrough: list[str] | None, pddl: str) -> dict:
    """``game.tw-pddl`` content: domain, grammar with the goal sentence, problem, and the
    planner expert's walkthrough."""
    return {"pddl_domain": domain, "grammar": grammar.replace("UNKNOWN GOAL", task.goal_text),
            "pddl_problem": pddl, "solvable": walkthrough is not None, "walkthrough": walkthrough}


def _dump(path: str, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=None, sort_keys=False)
        f.write("\n")


def write_logic(out_dir: str) -> None:
    """Copy the wheel's domain and grammar to ``OUT/logic/`` (what ``$ALFWORLD_DATA/logic``
    must hold for alfworld's configs)."""
    from alfworld.info import ALFRED_PDDL_PATH, ALFRED_TWL2_PATH

    os.makedirs(os.path.join(out_dir, "logic"), exist_ok=True)
    shutil.copyfile(ALFRED_PDDL_PATH, os.path.join(out_dir, "logic", "alfred.pddl"))
    shutil.copyfile(ALFRED_TWL2_PATH, os.path.join(out_dir, "logic", "alfred.twl2"))


# ---------------------------------------------------------------------------------------------
# the generation loop


class UnsolvableTask(RuntimeError):
    pass


def build_and_validate(task: TaskSpec, game_dir: str, domain: str, grammar: str,
                       env: AlfworldEnv, max_expert_steps: int = 60, initial_state: bool = True) -> list[str]:
    """Write the task's files into ``game_dir`` and play it with the planner expert.

    Returns the expert's actions. Raises :class:`UnsolvableTask` (after removing ``game_dir``)
    when the expert does not win."""
    os.makedirs(game_dir, exist_ok=True)
    pddl = problem_pddl(task)
    game_path = os.path.join(game_dir, "game.tw-pddl")
    if initial_state:  # ALFRED keeps the problem next to the game too (alfworld-generate reads it)
        with open(os.path.join(game_dir, "initial_state.pddl"), "w") as f:
            f.write(pddl)
    _dump(game_path, game_data(task, domain, grammar, None, pddl))
    # alfworld's expert wrapper reads traj_data.json next to the game on reset (any expert type)
    _dump(os.path.join(game_dir, "traj_data.json"), traj_data(task, []))
    result = run_expert(game_path, expert="planner", max_steps=max_expert_steps, env=env)
    error = result.error or ("not won" if not result.won else None)
    if result.won and not result.actions:
        error = "goal already satisfied at the start"
    if error:
        shutil.rmtree(game_dir, ignore_errors=True)
        raise UnsolvableTask("%s (%s in %s): %s" % (task.task_id, task.task_type, task.layout.layout_id, error))
    _dump(game_path, game_data(task, domain, grammar, result.actions, pddl))
    _dump(os.path.join(game_dir, "traj_data.json"), traj_data(task, result.actions))
    return result.actions


def generate(out_dir: str, n_train: int, n_eval_seen: int, n_eval_unseen: int, seed: int = 0,
             log: Callable[[str], None] = print, max_attempts: int = 20, initial_state: bool = True) -> dict:
    """Write ``n_*`` expert-validated games per split under ``out_dir`` (ALFWorld layout), the
    logic files, ``manifest.jsonl`` and ``split_plan.json``. Returns a summary (counts, dropped
    tasks, timings).

    An ``out_dir`` this function wrote before (it has ``manifest.jsonl``) is replaced; any
    other existing ``out_dir/json_2.1.1`` (e.g. the official ALFWorld data) is refused."""
    from alfworld.info import ALFRED_PDDL_PATH, ALFRED_TWL2_PATH

    t0 = time.perf_counter()
    out_dir = os.path.abspath(out_dir)
    root = os.path.join(out_dir, "json_2.1.1")
    if os.path.isdir(root):
        if not os.path.isfile(os.path.join(out_dir, "manifest.jsonl")):
            raise FileExistsError("%s exists and was not written by this generator (no manifest.jsonl); "
                                  "refusing to overwrite it" % root)
        shutil.rmtree(root)
    os.makedirs(out_dir, exist_ok=True)
    open(os.path.join(out_dir, "manifest.jsonl"), "w").close()  # marks out_dir as ours, even after a crash
    write_logic(out_dir)
    domain = open(ALFRED_PDDL_PATH).read()
    grammar = open(ALFRED_TWL2_PATH).read()
    plan = make_split_plan(seed)
    wanted = {"train": n_train, "valid_seen": n_eval_seen, "valid_unseen": n_eval_unseen}
    total = sum(wanted.values())
    log("alfworld generator: seed %d, %s -> %s" % (seed, wanted, out_dir))
    log("  layouts: %d seen, %d unseen; %d held-out goal combinations"
        % (len(plan.seen_layouts), len(plan.unseen_layouts), len(plan.heldout_combos)))

    env = AlfworldEnv(max_steps=None, expert="planner")
    seen_sigs: set = set()
    rows, dropped, duplicates = [], [], 0
    done = 0
    try:
        for split in SPLITS:
            for index in range(wanted[split]):
                for attempt in range(max_attempts):
                    task = sample_task(plan, split, index, attempt)
                    sig = signature(task)
                    if sig in seen_sigs:
                        duplicates += 1
                        continue
                    game_dir = os.path.join(root, split, task.dirname, task.trialname)
                    try:
                        actions = build_and_validate(task, game_dir, domain, grammar, env,
                                                     initial_state=initial_state)
                    except UnsolvableTask as e:
                        log("  ERROR unsolvable task dropped: %s" % e)
                        dropped.append({"task_id": task.task_id, "attempt": attempt, "error": str(e)})
                        continue
                    seen_sigs.add(sig)
                    rows.append({
                        "game": os.path.relpath(os.path.join(game_dir, "game.tw-pddl"), out_dir),
                        "split": split, "task_type": task.task_type, "task_id": task.task_id,
                        "goal": task.goal_text, "expert_steps": len(actions),
                        "layout": task.layout.layout_id, "room": task.layout.room,
                        "object_target": task.object_target, "parent_target": task.parent_target,
                        "toggle_target": task.toggle_target, "n_objects": len(task.objects),
                        "n_receptacles": len(task.layout.receptacles),
                    })
                    break
                else:
                    raise RuntimeError("no valid task for %s #%d after %d attempts" % (split, index, max_attempts))
                done += 1
                if done % 10 == 0 or done == total:
                    el = time.perf_counter() - t0
                    log("  [%d/%d] %s %.1fs (%.2fs/task)" % (done, total, split, el, el / done))
    finally:
        env.close()

    with open(os.path.join(out_dir, "manifest.jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    with open(os.path.join(out_dir, "split_plan.json"), "w") as f:
        json.dump(plan.to_json(), f, indent=1)
        f.write("\n")
    seconds = time.perf_counter() - t0
    counts = {s: sum(r["split"] == s for r in rows) for s in SPLITS}
    summary = {"out_dir": out_dir, "seed": seed, "counts": counts, "dropped_unsolvable": dropped,
               "duplicates_skipped": duplicates, "seconds": seconds,
               "mean_expert_steps": (sum(r["expert_steps"] for r in rows) / len(rows)) if rows else 0.0}
    log("done: %s games in %.1fs; %d unsolvable draws dropped, %d duplicate draws skipped; "
        "mean expert steps %.1f" % (counts, seconds, len(dropped), duplicates, summary["mean_expert_steps"]))
    return summary


def read_manifest(out_dir: str) -> list[dict]:
    with open(os.path.join(out_dir, "manifest.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


__all__ = [
    "GENERATOR_VERSION", "SPLITS", "TASK_TYPES", "Layout", "TaskSpec", "SplitPlan", "UnsolvableTask",
    "all_layouts", "make_split_plan", "sample_task", "feasible_combos", "problem_pddl", "traj_data",
    "game_data", "generate", "read_manifest", "write_logic", "build_and_validate", "signature",
]
