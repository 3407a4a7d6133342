"""Drawing for the synthetic re-ID dataset: what a person, a camera and a crop look like.

Everything here is a pure function of a ``numpy.random.Generator`` and plain data, so the
caller decides the seeding. Images are drawn with PIL ImageDraw at ``SUPERSAMPLE`` times the
target size (cheap anti-aliasing), reduced to the target size, then given the camera's
colour response, noise, blur and JPEG artefacts. No per-pixel Python loops.

Geometry is in units of the person's height ``u`` (head top to sole), so one drawing
serves every image size.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SUPERSAMPLE = 2
PERSON_WIDTH = (1.0, 1.25)  # cameras' horizontal stretch of people: fills the box like a detector crop

# --- palettes (RGB). Dark, muted clothing is commoner, as in street footage. -------------
CLOTH = (
    (25, 25, 30),  # black
    (235, 235, 228),  # white
    (130, 130, 132),  # grey
    (68, 68, 74),  # dark grey
    (30, 42, 95),  # navy
    (45, 90, 190),  # blue
    (125, 175, 225),  # light blue
    (195, 35, 40),  # red
    (115, 25, 35),  # dark red
    (40, 125, 55),  # green
    (105, 112, 52),  # olive
    (232, 200, 45),  # yellow
    (232, 125, 35),  # orange
    (232, 145, 175),  # pink
    (112, 52, 142),  # purple
    (112, 72, 40),  # brown
    (205, 185, 142),  # beige
    (25, 132, 132),  # teal
)
CLOTH_WEIGHTS = np.array([9, 5, 5, 6, 5, 4, 3, 3, 2, 2, 2, 2, 1.5, 1.5, 1.5, 3, 3, 1.5])
SKIN = ((245, 212, 185), (228, 185, 150), (200, 150, 110), (160, 110, 75), (110, 72, 48), (80, 52, 36))
HAIR = ((20, 18, 18), (60, 40, 28), (110, 75, 45), (200, 170, 110), (160, 160, 160), (150, 70, 35))
HAIR_WEIGHTS = np.array([6, 5, 3, 2, 1.5, 1])
SHOES = ((20, 20, 22), (235, 235, 235), (100, 65, 35), (120, 120, 125), (190, 40, 40), (40, 70, 170))
SHOE_WEIGHTS = np.array([6, 4, 2, 2, 1, 1])

UPPER_PATTERNS = ("solid", "stripes", "jacket", "logo", "block")  # jacket/logo show from the front only
UPPER_PATTERN_WEIGHTS = np.array([5, 2, 2, 2, 2])
SLEEVES = ("long", "short")
LOWER_KINDS = ("trousers", "shorts", "skirt")
LOWER_WEIGHTS = np.array([7, 2, 1.5])
BAGS = ("none", "backpack", "shoulder", "handbag")
BAG_WEIGHTS = np.array([4, 3, 2, 1.5])
SIDES = ("left", "right")  # the person's own left/right
# (height, build, leg fraction, head scale): slim/average/broad, short/tall
BODIES = (
    (0.90, 0.85, 0.46, 1.00),
    (0.96, 0.92, 0.49, 0.95),
    (1.00, 1.00, 0.47, 1.00),
    (0.93, 1.12, 0.45, 1.05),
    (1.00, 1.20, 0.47, 1.00),
    (0.97, 0.95, 0.51, 0.92),
)
VIEWS = ("front", "back", "left", "right")  # left/right: walking towards the image's left/right

# --- cameras: distinct colour casts so no two cameras look alike; shuffled per seed ---------
CASTS = (
    (1.00, 1.00, 1.00),  # neutral
    (1.18, 1.00, 0.78),  # warm tungsten
    (0.84, 0.97, 1.22),  # cool shade / overcast
    (0.90, 1.12, 0.88),  # green fluorescent
    (1.12, 0.86, 1.08),  # magenta
    (1.28, 1.02, 0.62),  # sodium street light
    (0.92, 1.02, 1.10),  # slight blue
    (1.06, 1.06, 0.90),  # yellowish
    (0.95, 0.92, 1.00),  # dim lilac
)
WALLS = ((150, 150, 150), (190, 175, 150), (150, 80, 65), (110, 130, 150), (70, 110, 60), (200, 200, 205),
         (90, 85, 80), (170, 160, 120), (60, 70, 90))
FLOORS = ((95, 95, 98), (150, 145, 135), (120, 110, 95), (75, 75, 80), (170, 170, 165), (110, 120, 110))
TEXTURES = ("plain", "columns", "windows", "bricks", "tiles")


@dataclass(frozen=True)
class Attributes:
    """The discrete look of a person; two identities never share all of it."""

    upper: int
    upper2: int  # second colour: stripes, inner shirt of an open jacket, logo, colour block
    pattern: str
    sleeves: str
    lower: int
    lower_kind: str
    shoes: int
    skin: int
    hair: int
    hair_long: bool
    bag: str
    bag_colour: int
    bag_side: str
    body: int

    def signature(self) -> tuple:
        # what makes two people "the same look": unused fields are normalised away
        bag = (self.bag, self.bag_colour, self.bag_side) if self.bag != "none" else ("none",)
        second = self.upper2 if self.pattern != "solid" else -1
        return (self.upper, second, self.pattern, self.sleeves, self.lower, self.lower_kind, self.shoes,
                self.skin, self.hair, self.hair_long, bag, self.body)


@dataclass(frozen=True)
class Person:
    """Attributes plus the exact colours and proportions of one individual."""

    attrs: Attributes
    colours: dict = field(hash=False)  # part name -> RGB tuple
    height: float
    build: float
    leg_frac: float
    head: float


@dataclass(frozen=True)
class Camera:
    index: int
    gains: tuple  # per-channel colour cast
    brightness: float
    contrast: float
    saturation: float
    gradient: float  # vertical illumination fall-off
    noise: float  # Gaussian noise sigma, in 0..255 units
    blur: float  # base blur radius at 128 px height
    view_probs: tuple  # over VIEWS
    fill: float  # mean person height / image height (camera distance)
    aspect: float  # horizontal stretch of people (lens, elevation)
    wall: tuple
    floor: tuple
    horizon: float
    texture: str
    clutter: tuple  # colours of background objects


@dataclass(frozen=True)
class Difficulty:
    """Knobs of how hard the dataset is. Defaults aim at ResNet-18 from scratch reaching a
    modest Rank-1 at 64x32; raise the jitters/probabilities to make it harder."""

    family_size: int = 3  # identities per family of hard negatives
    family_changes: tuple = (1, 2)  # attributes in which family members differ from the prototype
    shade_jitter: float = 14.0  # per-identity RGB std around the palette colour
    camera_cast: float = 0.7  # scales the camera colour casts (0 = all neutral, 1 = CASTS as listed)
    camera_brightness: float = 0.2  # cameras' brightness spread around 1
    camera_saturation: tuple = (0.7, 1.05)
    view_purity: float = 0.7  # probability that a track has its camera's dominant view
    track_light: float = 0.08  # brightness change between passes through the same camera
    image_light: float = 0.04  # brightness/colour change between frames of a track
    occlusion_prob: float = 0.2
    background_people_prob: float = 0.2
    blur_prob: float = 0.3
    blur_max: float = 1.0  # extra blur radius at 128 px height
    lowres_prob: float = 0.1  # down- then up-sampling
    noise: tuple = (1.5, 7.0)  # camera noise sigma range
    crop_jitter: float = 0.07  # detector crop offset, fraction of the box
    scale_jitter: float = 0.07
    jpeg_quality: tuple = (40, 95)


# --------------------------------------------------------------------------------------------
# sampling
# --------------------------------------------------------------------------------------------


def _pick(rng: np.random.Generator, n_or_seq, weights=None):
    if weights is None:
        return int(rng.integers(len(n_or_seq) if not isinstance(n_or_seq, int) else n_or_seq))
    p = np.asarray(weights, dtype=float)
    return int(rng.choice(len(p), p=p / p.sum()))


def random_attributes(rng: np.random.Generator) -> Attributes:
    upper = _pick(rng, CLOTH, CLOTH_WEIGHTS)
    upper2 = _pick(rng, CLOTH, CLOTH_WEIGHTS)
    while upper2 == upper:
        upper2 = _pick(rng, CLOTH, CLOTH_WEIGHTS)
    lower_kind = LOWER_KINDS[_pick(rng, LOWER_KINDS, LOWER_WEIGHTS)]
    return Attributes(
        upper=upper,
        upper2=upper2,
        pattern=UPPER_PATTERNS[_pick(rng, UPPER_PATTERNS, UPPER_PATTERN_WEIGHTS)],
        sleeves=SLEEVES[_pick(rng, SLEEVES, [3, 2])],
        lower=_pick(rng, CLOTH, CLOTH_WEIGHTS),
        lower_kind=lower_kind,
        shoes=_pick(rng, SHOES, SHOE_WEIGHTS),
        skin=_pick(rng, SKIN),
        hair=_pick(rng, HAIR, HAIR_WEIGHTS),
        hair_long=bool(rng.random() < (0.55 if lower_kind == "skirt" else 0.25)),
        bag=BAGS[_pick(rng, BAGS, BAG_WEIGHTS)],
        bag_colour=_pick(rng, CLOTH, CLOTH_WEIGHTS),
        bag_side=SIDES[_pick(rng, SIDES)],
        body=_pick(rng, BODIES),
    )


# which attribute a hard negative changes, and how likely (some are barely visible at 64x32)
MUTATIONS = ("upper", "lower", "pattern", "upper2", "sleeves", "lower_kind", "shoes", "hair", "bag",
             "bag_side", "body", "skin")
MUTATION_WEIGHTS = np.array([3, 3, 2, 1.5, 1.5, 1, 1.5, 1.5, 2, 1, 1.5, 1])


def mutate(attrs: Attributes, rng: np.random.Generator, n_changes: int) -> Attributes:
    """A family member: the prototype with ``n_changes`` distinct attributes changed."""
    fields = rng.choice(len(MUTATIONS), size=n_changes, replace=False,
                        p=MUTATION_WEIGHTS / MUTATION_WEIGHTS.sum())
    d = dict(attrs.__dict__)
    for i in sorted(int(f) for f in fields):
        name = MUTATIONS[i]
        if name in ("upper", "lower", "upper2"):
            d[name] = _different(rng, d[name], len(CLOTH), CLOTH_WEIGHTS)
            if d["upper2"] == d["upper"]:
                d["upper2"] = _different(rng, d["upper"], len(CLOTH), CLOTH_WEIGHTS)
            if name == "upper2" and d["pattern"] == "solid":
                d["pattern"] = UPPER_PATTERNS[1 + _pick(rng, len(UPPER_PATTERNS) - 1)]
        elif name == "pattern":
            d["pattern"] = UPPER_PATTERNS[_different(rng, UPPER_PATTERNS.index(d["pattern"]),
                                                     len(UPPER_PATTERNS), UPPER_PATTERN_WEIGHTS)]
        elif name == "sleeves":
            d["sleeves"] = "short" if d["sleeves"] == "long" else "long"
        elif name == "lower_kind":
            d["lower_kind"] = LOWER_KINDS[_different(rng, LOWER_KINDS.index(d["lower_kind"]), 3, LOWER_WEIGHTS)]
        elif name == "shoes":
            d["shoes"] = _different(rng, d["shoes"], len(SHOES), SHOE_WEIGHTS)
        elif name == "hair":
            if rng.random() < 0.5:
                d["hair_long"] = not d["hair_long"]
            else:
                d["hair"] = _different(rng, d["hair"], len(HAIR), HAIR_WEIGHTS)
        elif name == "bag":
            d["bag"] = BAGS[_different(rng, BAGS.index(d["bag"]), len(BAGS), BAG_WEIGHTS)]
        elif name == "bag_side":
            if d["bag"] == "none":
                d["bag"] = BAGS[1 + _pick(rng, len(BAGS) - 1)]
            d["bag_side"] = "left" if d["bag_side"] == "right" else "right"
        elif name == "body":
            d["body"] = _different(rng, d["body"], len(BODIES))
        elif name == "skin":
            d["skin"] = _different(rng, d["skin"], len(SKIN))
    return Attributes(**d)


def _different(rng, current: int, n: int, weights=None) -> int:
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float).copy()
    w[current] = 0.0
    return int(rng.choice(n, p=w / w.sum()))


def make_person(attrs: Attributes, rng: np.random.Generator, shade_jitter: float) -> Person:
    """Concrete colours and proportions: palette colour + a personal shade."""

    def shade(rgb, s=shade_jitter):
        return tuple(int(v) for v in np.clip(np.asarray(rgb) + rng.normal(0, s, 3), 0, 255))

    colours = {
        "upper": shade(CLOTH[attrs.upper]),
        "upper2": shade(CLOTH[attrs.upper2]),
        "lower": shade(CLOTH[attrs.lower]),
        "shoes": shade(SHOES[attrs.shoes], shade_jitter * 0.5),
        "skin": shade(SKIN[attrs.skin], shade_jitter * 0.4),
        "hair": shade(HAIR[attrs.hair], shade_jitter * 0.5),
        "bag": shade(CLOTH[attrs.bag_colour]),
    }
    h, b, leg, head = BODIES[attrs.body]
    return Person(attrs=attrs, colours=colours, height=h * (1 + rng.normal(0, 0.015)),
                  build=b * (1 + rng.normal(0, 0.03)), leg_frac=leg + rng.normal(0, 0.006),
                  head=head * (1 + rng.normal(0, 0.03)))


def random_person(rng: np.random.Generator, shade_jitter: float = 14.0) -> Person:
    return make_person(random_attributes(rng), rng, shade_jitter)


def make_camera(index: int, rng: np.random.Generator, cast: tuple, wall: tuple, floor: tuple,
                dominant_view: int, difficulty: Difficulty) -> Camera:
    """One camera; ``cast``/``wall``/``floor``/``dominant_view`` come from the caller so that
    cameras of one dataset are guaranteed to differ."""
    strength = difficulty.camera_cast
    gains = tuple(float(1 + strength * (g - 1) + rng.normal(0, 0.02 * strength)) for g in cast)
    purity = difficulty.view_purity
    probs = np.full(len(VIEWS), (1 - purity) / (len(VIEWS) - 1))
    probs[dominant_view] = purity
    lo, hi = difficulty.camera_saturation
    clutter = tuple(tuple(int(v) for v in rng.integers(30, 226, 3)) for _ in range(4))
    return Camera(
        index=index,
        gains=gains,
        brightness=float(1 + rng.uniform(-1, 1) * difficulty.camera_brightness),
        contrast=float(rng.uniform(0.8, 1.15)),
        saturation=float(rng.uniform(lo, hi)),
        gradient=float(rng.uniform(-0.25, 0.25)),
        noise=float(rng.uniform(*difficulty.noise)),
        blur=float(rng.uniform(0.0, 0.6)),
        view_probs=tuple(float(p) for p in probs),
        fill=float(rng.uniform(0.8, 0.9)),
        aspect=float(rng.uniform(*PERSON_WIDTH)),
        wall=tuple(int(v) for v in np.clip(np.asarray(wall) + rng.normal(0, 10, 3), 0, 255)),
        floor=tuple(int(v) for v in np.clip(np.asarray(floor) + rng.normal(0, 8, 3), 0, 255)),
        horizon=float(rng.uniform(0.45, 0.72)),
        texture=TEXTURES[int(rng.integers(len(TEXTURES)))],
        clutter=clutter,
    )


# --------------------------------------------------------------------------------------------
# drawing primitives
# --------------------------------------------------------------------------------------------


def _limb(draw: ImageDraw.ImageDraw, p0, p1, w0: float, w1: float, fill) -> None:
    """A tapered quad from p0 (half-width w0) to p1 (half-width w1), with round ends."""
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    n = math.hypot(dx, dy) or 1.0
    nx, ny = -dy / n, dx / n
    draw.polygon([(p0[0] + nx * w0, p0[1] + ny * w0), (p1[0] + nx * w1, p1[1] + ny * w1),
                  (p1[0] - nx * w1, p1[1] - ny * w1), (p0[0] - nx * w0, p0[1] - ny * w0)], fill=fill)
    draw.ellipse([p1[0] - w1, p1[1] - w1, p1[0] + w1, p1[1] + w1], fill=fill)


def _darker(rgb, f=0.78):
    return tuple(int(v * f) for v in rgb)


def _lerp(a, b, t):
    return a + (b - a) * t


@dataclass(frozen=True)
class _Body:
    """A person's drawing geometry in image pixels (see ``draw_person``): the unit ``u`` (height),
    ``wu`` (widths), the head, shoulder, hip and foot lines and the torso's half-widths."""
    a: Attributes
    c: dict
    view: str
    cx: float
    top: float
    u: float
    wu: float
    side: bool
    f: float  # facing direction in side views
    left_dir: float  # image x-direction of the person's own left side (front view: mirrored)
    bag_hidden: bool  # a shoulder bag or handbag on the far side of a side view
    hh: float
    hw: float
    head_cy: float
    sy: float  # shoulder line
    hip: float
    foot: float
    sw: float  # shoulder half-width
    ww: float  # waist half-width

    def torso_x(self, y):  # left/right edge of the torso at height y
        cx, sw, ww, sy, hip, u = self.cx, self.sw, self.ww, self.sy, self.hip, self.u
        t = (y - sy) / max(hip + 0.02 * u - sy, 1e-6)
        return cx - _lerp(sw, ww, t), cx + _lerp(sw, ww, t)


def draw_person(draw: ImageDraw.ImageDraw, p: Person, view: str, cx: float, top: float, u: float,
                stride: float, aspect: float = 1.0) -> None:
    """Draw a walking person whose head top is at ``top`` and soles at ``top + u``.

    ``view`` is one of VIEWS; ``stride`` in [-1, 1] is the walking phase; ``aspect`` stretches
    widths. A backpack shows whole from behind, as straps from the front, as a bump from the side.
    Drawn back to front: what is behind the body, the legs, the arms and torso, the bags, the head.
    """
    a, c = p.attrs, p.colours
    u = u * p.height
    wu = u * aspect * p.build  # unit for widths
    side = view in ("left", "right")
    f = -1.0 if view == "left" else 1.0  # facing direction in side views
    # image x-direction of the person's own left side (front view: mirrored)
    left_dir = {"front": 1.0, "back": -1.0, "left": 0.0, "right": 0.0}[view]
    visible_side = "left" if view == "left" else "right"  # side views show this side

    hh = 0.064 * u * p.head
    hw = 0.052 * u * aspect * p.head
    head_cy = top + hh
    sy = top + 0.145 * u  # shoulder line
    hip = top + u * (1 - p.leg_frac)
    foot = top + 0.975 * u
    sw = (0.078 if side else 0.125) * wu  # shoulder half-width
    ww = (0.072 if side else 0.100) * wu  # waist half-width
    bag_hidden = side and a.bag in ("shoulder", "handbag") and a.bag_side != visible_side
    b = _Body(a, c, view, cx, top, u, wu, side, f, left_dir, bag_hidden, hh, hw, head_cy, sy, hip, foot, sw, ww)
    _draw_behind(draw, b)
    _draw_legs(draw, b, stride)
    hand_pts = _draw_arms_and_torso(draw, b, stride)
    _draw_bags(draw, b, hand_pts)
    _draw_head(draw, b)


def _draw_behind(draw: ImageDraw.ImageDraw, b: _Body) -> None:
    """The things behind the body: a far-side shoulder bag, long hair, a backpack seen from the side."""
    a, c, cx, u, wu, f, side = b.a, b.c, b.cx, b.u, b.wu, b.f, b.side
    hw, head_cy, sy, hip, sw = b.hw, b.head_cy, b.sy, b.hip, b.sw
    if b.bag_hidden and a.bag == "shoulder":
        bx = cx - f * 0.05 * wu
        draw.rounded_rectangle([bx - 0.05 * wu, hip - 0.06 * u, bx + 0.05 * wu, hip + 0.06 * u],
                               radius=0.01 * u, fill=_darker(c["bag"]))
    if a.hair_long and b.view in ("front",) + (("left", "right") if side else ()):
        hx = cx - (f * 0.35 * hw if side else 0.0)
        draw.rectangle([hx - hw * 1.05, head_cy, hx + hw * 1.05, sy + 0.06 * u], fill=c["hair"])
    if side and a.bag == "backpack":
        bx0 = cx - f * (sw * 0.7)
        bx1 = bx0 - f * 0.085 * wu
        draw.rounded_rectangle([min(bx0, bx1), sy + 0.005 * u, max(bx0, bx1), sy + 0.22 * u],
                               radius=0.015 * u, fill=c["bag"])


def _draw_legs(draw: ImageDraw.ImageDraw, b: _Body, stride: float) -> None:
    """The legs (far leg first in side views), the shoes, and the skirt or the trousers' top."""
    a, c, cx, u, wu, f, side = b.a, b.c, b.cx, b.u, b.wu, b.f, b.side
    hip, foot, ww = b.hip, b.foot, b.ww
    lower, skin = c["lower"], c["skin"]
    leg_len = foot - hip
    if side:
        ang = 0.38 * stride
        hips = [(cx, hip), (cx, hip)]
        feet = [(cx + f * leg_len * math.sin(-ang), hip + leg_len * math.cos(ang)),
                (cx + f * leg_len * math.sin(ang), hip + leg_len * math.cos(ang))]
        shades = [0.8, 1.0]
    else:
        off = 0.048 * wu
        hips = [(cx - off, hip), (cx + off, hip)]
        lift = 0.03 * u * stride
        feet = [(cx - off * 1.15, foot - max(lift, 0)), (cx + off * 1.15, foot - max(-lift, 0))]
        shades = [1.0, 1.0]
    w_hip, w_ankle = 0.046 * wu, 0.028 * wu
    for (h0, f0), s in zip(zip(hips, feet), shades):
        knee = (_lerp(h0[0], f0[0], 0.45), _lerp(h0[1], f0[1], 0.45))
        w_knee = _lerp(w_hip, w_ankle, 0.45)
        if a.lower_kind == "trousers":
            _limb(draw, h0, f0, w_hip, w_ankle, _darker(lower, s))
        else:
            _limb(draw, knee, f0, w_knee * 0.85, w_ankle * 0.9, _darker(skin, s))
            if a.lower_kind == "shorts":
                _limb(draw, h0, knee, w_hip * 1.1, w_knee * 1.1, _darker(lower, s))
        shoe = _darker(c["shoes"], s)
        if side:
            draw.ellipse([f0[0] - 0.035 * wu + f * 0.012 * u, f0[1] - 0.018 * u,
                          f0[0] + 0.035 * wu + f * 0.025 * u, f0[1] + 0.022 * u], fill=shoe)
        else:
            draw.ellipse([f0[0] - 0.036 * wu, f0[1] - 0.02 * u, f0[0] + 0.036 * wu, f0[1] + 0.025 * u],
                         fill=shoe)
    if a.lower_kind == "skirt":
        xl, xr = ww * 1.05, ww * 1.55
        draw.polygon([(cx - xl, hip - 0.03 * u), (cx + xl, hip - 0.03 * u),
                      (cx + xr, hip + 0.2 * u), (cx - xr, hip + 0.2 * u)], fill=lower)
    elif a.lower_kind in ("trousers", "shorts"):
        draw.polygon([(cx - ww, hip - 0.03 * u), (cx + ww, hip - 0.03 * u),
                      (cx + ww, hip + 0.04 * u), (cx - ww, hip + 0.04 * u)], fill=lower)


def _draw_arm(draw: ImageDraw.ImageDraw, b: _Body, sh, hand, s) -> None:
    """One arm from shoulder ``sh`` to ``hand``, its sleeve and skin shaded by ``s``."""
    a, c, wu = b.a, b.c, b.wu
    skin, sleeve_colour = c["skin"], c["upper"]
    elbow = (_lerp(sh[0], hand[0], 0.45), _lerp(sh[1], hand[1], 0.45))
    col = _darker(sleeve_colour, s)
    if a.sleeves == "long":
        _limb(draw, sh, hand, 0.03 * wu, 0.024 * wu, col)
    else:
        _limb(draw, elbow, hand, 0.024 * wu, 0.022 * wu, _darker(skin, s))
        _limb(draw, sh, elbow, 0.034 * wu, 0.028 * wu, col)
    r = 0.023 * wu
    draw.ellipse([hand[0] - r, hand[1] - r, hand[0] + r, hand[1] + r], fill=_darker(skin, s))


def _draw_arms_and_torso(draw: ImageDraw.ImageDraw, b: _Body, stride: float) -> list:
    """The arms and the torso (in a side view the far arm before the torso); returns the hands as
    (side sign, (x, y)) pairs: -1/+1 left/right of the image in front and back views, 0 in side views."""
    a, c, cx, u, wu, f, side = b.a, b.c, b.cx, b.u, b.wu, b.f, b.side
    sy, hip, sw, ww = b.sy, b.hip, b.sw, b.ww
    upper = c["upper"]
    arm_len = 0.36 * u
    shoulder_pts = []
    if side:
        phi = -0.45 * stride
        shoulder_pts = [((cx, sy + 0.025 * u), -phi, 0.8), ((cx, sy + 0.025 * u), phi, 1.0)]
    else:
        for sgn in (-1.0, 1.0):
            shoulder_pts.append(((cx + sgn * (sw - 0.025 * wu), sy + 0.025 * u), sgn, 1.0))
    hand_pts = []
    if side:
        sh, phi, s = shoulder_pts[0]
        hand = (sh[0] + f * arm_len * math.sin(phi), sh[1] + arm_len * math.cos(phi))
        _draw_arm(draw, b, sh, hand, s)
    # ---- torso
    draw.polygon([(cx - sw, sy), (cx + sw, sy), (cx + ww, hip + 0.02 * u), (cx - ww, hip + 0.02 * u)], fill=upper)
    draw.ellipse([cx - sw, sy - 0.02 * u, cx + sw, sy + 0.05 * u], fill=upper)  # rounded shoulders
    _draw_pattern(draw, a, c, b.view, cx, sy, hip, u, b.torso_x, f)
    if not side:
        for sh, sgn, s in shoulder_pts:
            swing = 0.05 * u * stride * sgn
            hand = (sh[0] + sgn * 0.02 * wu, sh[1] + arm_len - abs(swing))
            _draw_arm(draw, b, sh, hand, s)
            hand_pts.append((sgn, hand))
    else:
        sh, phi, s = shoulder_pts[1]
        hand = (sh[0] + f * arm_len * math.sin(phi), sh[1] + arm_len * math.cos(phi))
        _draw_arm(draw, b, sh, hand, s)
        hand_pts.append((0.0, hand))
    return hand_pts


def _draw_bags(draw: ImageDraw.ImageDraw, b: _Body, hand_pts: list) -> None:
    """The bags in front of or on the body; a handbag hangs from the hand on its side (``hand_pts``)."""
    a, c, cx, u, wu, f, side, view = b.a, b.c, b.cx, b.u, b.wu, b.f, b.side, b.view
    sy, hip, sw, ww = b.sy, b.hip, b.sw, b.ww
    if a.bag == "backpack" and view == "back":
        draw.rounded_rectangle([cx - 0.085 * wu, sy + 0.015 * u, cx + 0.085 * wu, sy + 0.23 * u],
                               radius=0.02 * u, fill=c["bag"])
        draw.line([cx - 0.06 * wu, sy + 0.15 * u, cx + 0.06 * wu, sy + 0.15 * u],
                  fill=_darker(c["bag"], 0.6), width=max(1, int(0.008 * u)))
    elif a.bag == "backpack" and view == "front":
        wdt = max(1, int(0.02 * wu))
        for sgn in (-1, 1):
            draw.line([cx + sgn * 0.55 * sw, sy, cx + sgn * 0.5 * sw, sy + 0.17 * u], fill=c["bag"], width=wdt)
    elif a.bag == "backpack" and side:
        wdt = max(1, int(0.018 * wu))
        draw.line([cx - f * 0.01 * u, sy, cx + f * 0.02 * u, sy + 0.16 * u], fill=c["bag"], width=wdt)
    elif a.bag in ("shoulder", "handbag") and not b.bag_hidden:
        if side:
            sx = 0.0
        else:
            sx = b.left_dir if a.bag_side == "left" else -b.left_dir
        if a.bag == "shoulder":
            bx = cx + sx * (ww + 0.035 * wu) + (f * 0.02 * u if side else 0.0)
            by = hip - 0.02 * u
            draw.line([cx - sx * sw * 0.75, sy, bx, by - 0.05 * u], fill=_darker(c["bag"], 0.85),
                      width=max(1, int(0.014 * u)))
            draw.rounded_rectangle([bx - 0.05 * wu, by - 0.055 * u, bx + 0.05 * wu, by + 0.06 * u],
                                   radius=0.01 * u, fill=c["bag"])
        else:
            hand = next((h for sgn, h in hand_pts if sgn == sx), hand_pts[-1][1])
            draw.rectangle([hand[0] - 0.04 * wu, hand[1], hand[0] + 0.04 * wu, hand[1] + 0.075 * u],
                           fill=c["bag"])


def _draw_head(draw: ImageDraw.ImageDraw, b: _Body) -> None:
    """The neck, the head and the hair as the view shows them."""
    a, c, cx, u, wu, f, view, top = b.a, b.c, b.cx, b.u, b.wu, b.f, b.view, b.top
    hh, hw, head_cy, sy = b.hh, b.hw, b.head_cy, b.sy
    skin = c["skin"]
    nw = 0.022 * wu
    draw.rectangle([cx - nw, head_cy + hh * 0.6, cx + nw, sy + 0.01 * u], fill=_darker(skin, 0.9))
    box = [cx - hw, top, cx + hw, top + 2 * hh]
    hair = c["hair"]
    if view == "back":
        draw.ellipse(box, fill=hair)
        if a.hair_long:
            draw.rounded_rectangle([cx - hw * 1.05, head_cy, cx + hw * 1.05, sy + 0.08 * u],
                                   radius=0.02 * u, fill=hair)
    elif view == "front":
        draw.ellipse(box, fill=skin)
        draw.chord([cx - hw * 1.06, top - 0.004 * u, cx + hw * 1.06, top + 1.5 * hh], 180, 360, fill=hair)
    else:
        hx = cx + f * 0.008 * u
        box = [hx - hw, top, hx + hw, top + 2 * hh]
        draw.ellipse(box, fill=skin)
        start, end = (100, 330) if f > 0 else (210, 80)
        draw.chord([hx - hw * 1.05, top - 0.004 * u, hx + hw * 1.05, top + 2 * hh * 0.95], start, end, fill=hair)


def _draw_pattern(draw, a: Attributes, c: dict, view: str, cx, sy, hip, u, torso_x, f) -> None:
    second = c["upper2"]
    bottom = hip + 0.02 * u
    if a.pattern == "stripes":
        band = 0.03 * u
        y = sy + band
        while y < bottom - band * 0.5:
            (l0, r0), (l1, r1) = torso_x(y), torso_x(y + band)
            draw.polygon([(l0, y), (r0, y), (r1, y + band), (l1, y + band)], fill=second)
            y += 2 * band
    elif a.pattern == "block":  # two-tone top: the upper 40 % in the second colour
        yb = _lerp(sy, bottom, 0.4)
        (l1, r1) = torso_x(yb)
        draw.polygon([(torso_x(sy)[0], sy), (torso_x(sy)[1], sy), (r1, yb), (l1, yb)], fill=second)
    elif a.pattern == "jacket":  # open jacket: the shirt shows in front only
        if view == "front":
            w = 0.035 * u
            draw.polygon([(cx - w * 0.6, sy), (cx + w * 0.6, sy), (cx + w, bottom), (cx - w, bottom)], fill=second)
        elif view in ("left", "right"):
            xl, xr = torso_x(sy + 0.05 * u)
            edge = xr if f > 0 else xl
            draw.rectangle([min(edge, edge - f * 0.02 * u), sy + 0.03 * u, max(edge, edge - f * 0.02 * u), bottom],
                           fill=second)
    elif a.pattern == "logo" and view == "front":
        ly = sy + 0.06 * u
        draw.rectangle([cx - 0.045 * u, ly, cx + 0.045 * u, ly + 0.075 * u], fill=second)


def draw_background(draw: ImageDraw.ImageDraw, rng: np.random.Generator, cam: Camera, W: int, H: int) -> None:
    """The camera's scene (wall, floor, texture) at a random pan, plus a few random objects."""
    jitter = rng.normal(0, 6, 3)
    wall = tuple(int(v) for v in np.clip(np.asarray(cam.wall) + jitter, 0, 255))
    floor = tuple(int(v) for v in np.clip(np.asarray(cam.floor) + jitter, 0, 255))
    hy = H * (cam.horizon + rng.normal(0, 0.03))
    draw.rectangle([0, 0, W, H], fill=wall)
    draw.rectangle([0, hy, W, H], fill=floor)
    shift = rng.uniform(0, W)
    dark, light = _darker(wall, 0.7), tuple(min(255, int(v * 1.2 + 10)) for v in wall)
    if cam.texture == "columns":
        step = W * 0.7
        x = -step + shift % step
        while x < W:
            draw.rectangle([x, 0, x + W * 0.15, hy], fill=dark)
            x += step
    elif cam.texture == "windows":
        step_x, step_y = W * 0.45, H * 0.18
        y = H * 0.04
        while y < hy - step_y * 0.6:
            x = -step_x + shift % step_x
            while x < W:
                draw.rectangle([x, y, x + step_x * 0.6, y + step_y * 0.6], fill=light)
                x += step_x
            y += step_y
    elif cam.texture == "bricks":
        step = H * 0.05
        y = step
        width = max(1, int(H * 0.006))
        while y < hy:
            draw.line([0, y, W, y], fill=dark, width=width)
            y += step
    elif cam.texture == "tiles":
        step = H * 0.06
        y = hy + step
        width = max(1, int(H * 0.005))
        fdark = _darker(floor, 0.75)
        while y < H:
            draw.line([0, y, W, y], fill=fdark, width=width)
            step *= 1.25
            y += step
        x = -W + shift % (W * 0.5)
        while x < 2 * W:
            draw.line([x, hy, x + (x - W / 2) * 0.8, H], fill=fdark, width=width)
            x += W * 0.5
    for _ in range(int(rng.integers(0, 3))):
        col = cam.clutter[int(rng.integers(len(cam.clutter)))]
        x0, w = rng.uniform(-0.2, 1.0) * W, rng.uniform(0.15, 0.6) * W
        y1 = hy + rng.uniform(0.0, 0.25) * H
        h = rng.uniform(0.1, 0.4) * H
        draw.rectangle([x0, y1 - h, x0 + w, y1], fill=col)


# --------------------------------------------------------------------------------------------
# whole images
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shot:
    """How one image is framed: who, from where, and what kind of crop.

    style: "detected" (detector crop, jittered), "hand" (tight hand-drawn box, gt_bbox),
    "wide" (background-heavy crop of a small person), "fragment" (a bad crop: part of a person),
    "empty" (background only).
    """

    style: str
    person: Person | None = None
    view: str = "front"
    stride: float = 0.0
    light: float = 1.0  # brightness of this pass (track) through the camera


def render(rng: np.random.Generator, shot: Shot, cam: Camera, height: int, width: int,
           difficulty: Difficulty) -> Image.Image:
    """Draw one image at ``height`` x ``width`` (RGB, uint8)."""
    ss = SUPERSAMPLE
    H, W = height * ss, width * ss
    img = Image.new("RGB", (W, H))
    draw = ImageDraw.Draw(img)
    draw_background(draw, rng, cam, W, H)
    if rng.random() < difficulty.background_people_prob:  # a small passer-by behind
        small = random_person(rng, difficulty.shade_jitter)
        u = H * rng.uniform(0.3, 0.5)
        draw_person(draw, small, VIEWS[int(rng.integers(4))], rng.uniform(0, W), H * cam.horizon - 0.85 * u,
                    u, float(rng.uniform(-1, 1)), cam.aspect)

    if shot.person is not None and shot.style != "empty":
        u, cx, top = _framing(rng, shot.style, cam, W, H, difficulty)
        draw.ellipse([cx - 0.14 * u, top + 0.95 * u, cx + 0.14 * u, top + 1.02 * u],
                     fill=_darker(cam.floor, 0.7))  # shadow
        draw_person(draw, shot.person, shot.view, cx, top, u, shot.stride, cam.aspect)
        if shot.style in ("detected", "wide", "hand") and rng.random() < difficulty.occlusion_prob:
            _occlude(draw, rng, cam, W, H, difficulty)

    img = img.resize((width, height), Image.Resampling.BOX)
    return _camera_response(img, rng, cam, shot.light, difficulty)


def _framing(rng, style: str, cam: Camera, W: int, H: int, d: Difficulty):
    """Person height u, centre x and head top for each kind of crop."""
    if style == "hand":
        u = H * (0.92 + rng.normal(0, 0.015))
        return u, W / 2 + rng.normal(0, 0.015) * W, (H - u) / 2 + rng.normal(0, 0.01) * H
    if style == "detected":
        u = H * cam.fill * (1 + rng.normal(0, d.scale_jitter))
        cx = W / 2 + rng.normal(0, d.crop_jitter) * W
        top = (H - u) / 2 + rng.normal(0, d.crop_jitter * 0.5) * H
        return u, cx, top
    if style == "wide":  # background-heavy: small or off-centre person
        u = H * rng.uniform(0.35, 0.65)
        return u, rng.uniform(0.15, 0.85) * W, rng.uniform(0.0, 1.0) * (H - u)
    # fragment: zoomed in on a part, or mostly out of the frame
    if rng.random() < 0.5:
        u = H * rng.uniform(1.6, 3.0)
        return u, W / 2 + rng.normal(0, 0.2) * W, -rng.uniform(0.0, 0.7) * u
    u = H * rng.uniform(0.7, 1.0)
    return u, (rng.choice([-1.0, 1.0]) * rng.uniform(0.45, 0.65) + 0.5) * W, rng.uniform(-0.4, 0.3) * H


def _occlude(draw, rng, cam: Camera, W: int, H: int, d: Difficulty) -> None:
    kind = int(rng.integers(3))
    col = cam.clutter[int(rng.integers(len(cam.clutter)))]
    if kind == 0:  # pole or sign post
        x = rng.uniform(0.0, 1.0) * W
        draw.rectangle([x, 0, x + rng.uniform(0.08, 0.18) * W, H], fill=col)
    elif kind == 1:  # low object: bench, car bonnet, railing
        h = rng.uniform(0.15, 0.35) * H
        x0 = rng.uniform(-0.5, 0.3) * W
        draw.rectangle([x0, H - h, x0 + rng.uniform(0.6, 1.2) * W, H], fill=col)
    else:  # another pedestrian stepping in front, at the side
        other = random_person(rng, d.shade_jitter)
        u = H * rng.uniform(0.85, 1.0)
        cx = W * (0.5 + rng.choice([-1.0, 1.0]) * rng.uniform(0.55, 0.8))
        draw_person(draw, other, VIEWS[int(rng.integers(4))], cx, (H - u) / 2, u, float(rng.uniform(-1, 1)),
                    cam.aspect)


def _camera_response(img: Image.Image, rng, cam: Camera, light: float, d: Difficulty) -> Image.Image:
    """Colour cast, saturation, brightness/contrast, illumination gradient, noise, blur, low resolution."""
    arr = np.asarray(img, dtype=np.float32) * (1.0 / 255.0)
    h, w = arr.shape[:2]
    grey = arr.mean(axis=2, keepdims=True)
    arr = grey + (arr - grey) * cam.saturation
    tint = 1 + rng.normal(0, d.image_light * 0.5, 3)
    gain = np.asarray(cam.gains, dtype=np.float32) * (cam.brightness * light * (1 + rng.normal(0, d.image_light)))
    arr = arr * (gain * tint).astype(np.float32)
    ramp = 1 + cam.gradient * (np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None, None])
    arr = (arr * ramp - 0.5) * cam.contrast + 0.5
    arr += rng.normal(0, cam.noise / 255.0, arr.shape).astype(np.float32)
    out = Image.fromarray((np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8))
    radius = cam.blur * h / 128
    if rng.random() < d.blur_prob:
        radius += rng.uniform(0, d.blur_max) * h / 128
    if radius > 0.15:
        out = out.filter(ImageFilter.GaussianBlur(radius))
    if rng.random() < d.lowres_prob:
        f = rng.uniform(0.4, 0.7)
        out = out.resize((max(1, int(w * f)), max(1, int(h * f))), Image.Resampling.BILINEAR).resize(
            (w, h), Image.Resampling.BILINEAR)
    return out


def encode_jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()
