"""A synthetic dataset in the exact CoronaHack (Kaggle) layout with procedurally drawn chest radiographs."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from xraylib.data import IMAGES_DIR, METADATA_CSV, SUMMARY_CSV, holds_dataset
from xraylib.errors import InputError

# Proportions of the real metadata (docs/real-dataset.md): Kermany TRAIN, TEST, the 70 non-Kermany TRAIN images.
_KERMANY_TRAIN = {"normal": 1341, "bacteria": 2530, "virus": 1345}
_KERMANY_TEST = {"normal": 234, "bacteria": 242, "virus": 148}
_OTHER = {"covid-19": 58, "streptococcus": 5, "sars": 4, "ards": 2, "normal": 1}
_IMAGES_PER_PATIENT = ([1, 2, 3, 4, 5, 6, 8], [0.62, 0.2, 0.09, 0.04, 0.025, 0.015, 0.01])
# (Label, Label_1_Virus_category, Label_2_Virus_category) of each subtype, spelled as in the real metadata.
_SUBTYPE_METADATA = {
    "normal": ("Normal", "", ""),
    "bacteria": ("Pnemonia", "bacteria", ""),
    "virus": ("Pnemonia", "Virus", ""),
    "covid-19": ("Pnemonia", "Virus", "COVID-19"),
    "sars": ("Pnemonia", "Virus", "SARS"),
    "ards": ("Pnemonia", "Stress-Smoking", "ARDS"),
    "streptococcus": ("Pnemonia", "bacteria", "Streptococcus"),
}
# File formats of the non-Kermany images (papers' figures): suffix and Pillow mode.
DEMO_DATA = Path("data") / "demo"  # the demo's set, under the working directory (`make demo`: the clone's)
_OTHER_FORMATS = [(".jpg", "RGB"), (".png", "RGB"), (".jpeg", "L"), (".png", "I;16"), (".jpg", "L"), (".png", "RGBA")]


@dataclass
class _Item:
    file: str
    split: str  # train | test
    subtype: str
    patient: int  # anatomy seed: images of one patient share it
    index: int  # position in the metadata
    mode: str = "L"
    source: str = "kermany"


def mask_paths(image_path: str | os.PathLike) -> tuple[Path, Path]:
    """(lungs, opacity) mask paths of an image of a synthetic dataset: `<root>/masks/<split>/<stem>_*.png`."""
    p = Path(image_path)
    root = p.parents[3]
    return (
        root / "masks" / p.parent.name / f"{p.stem}_lungs.png",
        root / "masks" / p.parent.name / f"{p.stem}_opacity.png",
    )


# --------------------------------------------------------------------------------------------- drawing
def _smooth(x: np.ndarray, edge: float) -> np.ndarray:
    """Soft step 0 -> 1 around x = 0 with width `edge`."""
    return 1.0 / (1.0 + np.exp(-np.clip(x / edge, -30, 30)))


def _lowfreq(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Smooth random field in about [-1, 1]: a small random grid resized bicubically."""
    gh, gw = max(2, int(cells * h / max(h, w)) + 1), max(2, int(cells * w / max(h, w)) + 1)
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    return np.asarray(Image.fromarray(grid).resize((w, h), Image.BICUBIC), dtype=np.float32) * 0.6


@dataclass
class _Thorax:
    """Where one film's thorax lies. Smooth anatomy is drawn on a grid at a third of the image size (hs, ws), then
    upsampled to the image (h, w); x, y are the grid's pixel coordinates in the image."""

    w: int
    h: int
    hs: int
    ws: int
    x: np.ndarray
    y: np.ndarray
    u: np.ndarray  # -1..1 across the thorax (image left = patient's right)
    v: np.ndarray  # 0 at the lung apices, 1 at the domes of the diaphragm
    au: np.ndarray  # |u|
    adult: bool


def _thorax(item: _Item, prng, rng) -> _Thorax:
    """The film's size (the patient's) and the thorax's position and tilt on it (this film's)."""
    adult = item.source == "other"
    width = int(prng.uniform(420, 700) if adult else prng.uniform(300, 700))
    aspect = prng.uniform(0.85, 1.15) if adult else prng.uniform(1.0, 1.45)  # width / height
    w, h = width, int(round(width / aspect))
    hs, ws = max(8, h // 3), max(8, w // 3)  # smooth anatomy drawn at a third of the size, then upsampled
    y, x = np.mgrid[0:hs, 0:ws].astype(np.float32)
    y, x = y * (h / hs), x * (w / ws)
    cx = w * (0.5 + rng.normal(0, 0.025))
    half = w * (prng.uniform(0.27, 0.36) if not adult else prng.uniform(0.3, 0.38)) * min(1.0, 1.25 * h / w)
    top = h * (prng.uniform(0.1, 0.2) + rng.normal(0, 0.015))
    bottom = h * (prng.uniform(0.74, 0.86) + rng.normal(0, 0.015))
    u = (x - cx) / half  # -1..1 across the thorax (image left = patient's right)
    v = (y - top) / (bottom - top)  # 0 at the lung apices, 1 at the domes of the diaphragm
    tilt = rng.normal(0, 0.04)
    u = u + tilt * (v - 0.5)
    return _Thorax(w, h, hs, ws, x, y, u, v, np.abs(u), adult)


def _body(t: _Thorax, prng) -> np.ndarray:
    """The image's start: neck above, shoulders and chest wall, abdomen below; raised arms on most pediatric films."""
    body_half = 0.33 + 0.95 * _smooth(t.v + 0.12, 0.05) + 0.05 * t.v
    body = _smooth(body_half - t.au, 0.05)
    img = 0.06 + 0.40 * body
    if prng.random() < 0.6 and not t.adult:  # raised arms beside the head, typical of pediatric films
        arm = _smooth(0.16 - np.abs(t.au - 1.42 - 0.15 * t.v), 0.04) * _smooth(0.55 - t.v, 0.08)
        img += 0.33 * arm
    return img


def _lungs(t: _Thorax, prng) -> np.ndarray:
    """The lungs in [0, 1]: narrow rounded apices, wide bases domed by the diaphragm, deep costophrenic angles."""
    u, v = t.u, t.v
    lungs = np.zeros_like(u)
    vc = np.clip(v, 0, 1.1)
    for side in (-1.0, 1.0):
        medial = 0.13 + 0.03 * vc  # mediastinal border
        lateral = prng.uniform(0.86, 0.95) - 0.28 * (1 - np.sqrt(np.clip(vc / 0.45, 0, 1)))  # chest wall
        su = side * u  # distance from the midline towards this side
        inside = _smooth(su - medial, 0.03) * _smooth(lateral - su, 0.03)
        mid = 0.5 * (medial + lateral)
        du = (su - mid) / (0.5 * (lateral - medial) + 1e-3)
        apex = 0.02 + 0.07 * du**2
        base = prng.uniform(0.9, 0.97) + 0.09 * du + 0.05 * du**2 + (0.05 if side > 0 else 0.0)
        lungs = np.maximum(lungs, inside * _smooth(v - apex, 0.025) * _smooth(base - v, 0.015))
    return lungs


def _heart(t: _Thorax, prng, img, lungs) -> tuple[np.ndarray, ...]:
    """Onto `img`: the heart, to the patient's left (image right) in the lower mediastinum, the mediastinum above
    it, and the dark lung field around them. Returns (heart, mediastinum, lung field)."""
    u, v = t.u, t.v
    hx, hy = prng.uniform(0.08, 0.18), prng.uniform(0.7, 0.78)
    hr = prng.uniform(0.3, 0.37) * (0.8 if t.adult else 1.0)
    heart = _smooth(1 - ((u - hx) / (hr * 1.2)) ** 2 - ((v - hy) / (hr * 0.95)) ** 2, 0.18)
    media = _smooth(0.15 + 0.05 * v - np.abs(u - 0.02), 0.04) * _smooth(v + 0.1, 0.05)
    lung_field = lungs * (1 - 0.8 * heart) * (1 - media)
    img -= 0.25 * lung_field
    img += 0.05 * heart + 0.04 * media
    return heart, media, lung_field


def _bones(t: _Thorax, prng, img, heart, media) -> None:
    """Onto `img`: posterior ribs arching from the spine and falling laterally, anterior ribs falling medially
    (fainter); the spine with its vertebrae; the clavicles."""
    u, v, au = t.u, t.v, t.au
    n_ribs = prng.uniform(8.0, 9.5)
    wall = _smooth(1.02 - au, 0.04) * _smooth(au - 0.1, 0.03) * _smooth(v + 0.08, 0.04) * _smooth(1.0 - v, 0.06)
    post = n_ribs * (v + 0.42 * (au - 0.35) ** 2 - 0.05) + prng.uniform(0, 1)
    ant = n_ribs * 0.8 * (v + 0.28 * au) + prng.uniform(0, 1)
    ribs = 0.08 * (0.5 + 0.5 * np.cos(2 * np.pi * post)) ** 8 + 0.035 * (0.5 + 0.5 * np.cos(2 * np.pi * ant)) ** 8
    img += ribs * wall * (1 - 0.6 * heart) * (1 - 0.7 * media)
    spine = _smooth(0.075 - np.abs(u - 0.01), 0.015) * _smooth(v + 0.25, 0.05)
    verte = 0.8 + 0.2 * np.cos(2 * np.pi * n_ribs * 1.05 * v)
    img += 0.09 * spine * verte * (1 - 0.5 * heart)
    cl = v - (-0.03 - 0.06 * (au - 0.15) + 0.14 * (au - 0.55) ** 2)
    img += 0.09 * _smooth(0.022 - np.abs(cl), 0.008) * _smooth(0.8 - au, 0.05) * _smooth(au - 0.06, 0.02)


def _markings(t: _Thorax, prng, rng, img, lung_field) -> np.ndarray:
    """Onto `img`: lung markings, vessels fanning out of the hila, brighter near them. Returns the hila."""
    hila = np.exp(-(((t.au - 0.25) / 0.15) ** 2 + ((t.v - 0.45) / 0.18) ** 2))
    marks = _lowfreq(rng, t.hs, t.ws, 28)
    img += lung_field * (0.035 * np.abs(marks) + 0.06 * hila * prng.uniform(0.6, 1.2))
    return hila


def _findings(t: _Thorax, sub: str, rng, img, lungs, heart, hila, lung_field) -> tuple[np.ndarray, float]:
    """Onto `img`: the opacities of pneumonia subtype `sub` inside the lung fields (focal for bacteria, diffuse
    for viruses), or on some normal films a variant that mimics a faint finding. Returns (opacity, severity)."""
    u, v, au = t.u, t.v, t.au
    opacity = np.zeros_like(u)
    if sub != "normal":
        faint = rng.random() < 0.18
        severity = rng.uniform(0.18, 0.4) if faint else rng.uniform(0.5, 1.0)
        if sub in ("bacteria", "streptococcus"):  # focal (lobar) consolidation, one or two blobs
            for _ in range(1 if rng.random() < 0.7 else 2):
                side = rng.choice([-1.0, 1.0])
                bu = side * rng.uniform(0.3, 0.72)
                bv = rng.uniform(0.35, 0.85)
                r = rng.uniform(0.16, 0.3)
                d2 = ((u - bu) / (r * 1.2)) ** 2 + ((v - bv) / r) ** 2
                blob = np.exp(-1.2 * d2**1.5) * (0.8 + 0.45 * _lowfreq(rng, t.hs, t.ws, 12))
                opacity = np.maximum(opacity, blob)
        else:  # viral and the like: diffuse patchy, bilateral, perihilar and lower zones
            patches = _smooth(_lowfreq(rng, t.hs, t.ws, 16) + rng.uniform(0.1, 0.4), 0.15) * (
                0.7 + 0.3 * _lowfreq(rng, t.hs, t.ws, 40)
            )
            weight = 0.45 + 0.55 * hila + 0.35 * _smooth(v - 0.55, 0.1)
            if sub in ("covid-19", "sars", "ards"):  # peripheral ground glass
                weight = 0.4 + 0.6 * _smooth(au - 0.55, 0.1)
            opacity = patches * weight * 0.85
        opacity = np.clip(opacity, 0, 1) * lungs
        strength = 0.7 if sub in ("bacteria", "streptococcus") else 0.5
        img += strength * severity * opacity * (1 - 0.4 * heart)
    else:
        severity = 0.0
        if rng.random() < 0.15:  # normal variants that mimic faint findings: prominent hila, thymus
            img += lung_field * 0.05 * hila * rng.uniform(0.5, 1.5)
            img += 0.06 * _smooth(0.3 - np.abs(u - 0.05), 0.05) * _smooth(0.35 - v, 0.08)
    return opacity, severity


def _film(t: _Thorax, rng, img, lungs, opacity, severity: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The film: exposure, film response, blur, noise, vignetting, collimation; the image and its masks upsampled
    to the film's size. Returns (image float [0,1] (H,W), lung mask bool, opacity mask bool)."""
    w, h, x, y = t.w, t.h, t.x, t.y
    img += 0.03 * _lowfreq(rng, t.hs, t.ws, 3)
    img = np.clip(img, 0, 1) ** rng.uniform(0.8, 1.25)
    img = img * rng.uniform(0.85, 1.1) + rng.uniform(-0.04, 0.04)
    img *= 1 - 0.25 * (((x - w / 2) / (w / 2)) ** 2 + ((y - h / 2) / (h / 2)) ** 2)  # vignetting

    def up(a: np.ndarray, how: int = Image.BILINEAR) -> np.ndarray:
        return np.array(Image.fromarray(a.astype(np.float32)).resize((w, h), how), dtype=np.float32)

    img = up(img, Image.BICUBIC)
    img += rng.uniform(0.008, 0.025) * rng.standard_normal(img.shape, dtype=np.float32)
    img = np.clip(img, 0, 1)
    lung_mask = up(lungs) > 0.5
    opacity_mask = (up(opacity) > 0.3) & lung_mask if severity > 0 else np.zeros_like(lung_mask)
    return img, lung_mask, opacity_mask


def _draw(item: _Item, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one radiograph: (image float [0,1] (H,W), lung mask bool, opacity mask bool). The anatomy is the
    patient's, the position, exposure, findings and noise this film's; each part is drawn in turn onto the image."""
    prng = np.random.default_rng([seed, 1, item.patient])  # anatomy: same for all images of a patient
    rng = np.random.default_rng([seed, 2, item.index])  # this film: position, exposure, findings, noise
    t = _thorax(item, prng, rng)
    img = _body(t, prng)
    lungs = _lungs(t, prng)
    heart, media, lung_field = _heart(t, prng, img, lungs)
    _bones(t, prng, img, heart, media)
    hila = _markings(t, prng, rng, img, lung_field)
    opacity, severity = _findings(t, item.subtype, rng, img, lungs, heart, hila, lung_field)
    return _film(t, rng, img, lungs, opacity, severity)


def _marker(image: Image.Image, rng: np.random.Generator) -> None:
    """A side marker letter in a corner, as radiographers place one (independent of the label)."""
    draw = ImageDraw.Draw(image)
    w, h = image.size
    px, py = rng.uniform(0.04, 0.2) * w, rng.uniform(0.04, 0.2) * h
    if rng.random() < 0.5:
        px = w - px - 12
    draw.text((px, py), "R" if rng.random() < 0.7 else "L", fill=230)


def _render(item: _Item, seed: int, folder: Path, masks: Path | None) -> None:
    img, lungs, opacity = _draw(item, seed)
    rng = np.random.default_rng([seed, 3, item.index])
    gray = Image.fromarray((img * 255 + 0.5).astype(np.uint8))
    if rng.random() < 0.5:
        _marker(gray, rng)
    if item.source == "other":  # a figure from a paper: white frame and a panel letter
        draw = ImageDraw.Draw(gray)
        w, h = gray.size
        border = int(rng.integers(3, 9))
        draw.rectangle([0, 0, w - 1, h - 1], outline=255, width=border)
        draw.text((border + 6, border + 4), "ABCD"[int(rng.integers(0, 4))], fill=255)
    path = folder / item.file
    if item.mode == "L":
        gray.save(path, quality=int(rng.integers(80, 95)) if item.file.endswith(("jpeg", "jpg")) else None)
    elif item.mode == "I;16":
        Image.fromarray((np.asarray(gray, np.uint16) * 257).astype(np.uint16)).save(path)
    else:
        arr = np.asarray(gray, np.float32)
        tint = np.array([1.0, rng.uniform(0.93, 1.0), rng.uniform(0.85, 1.0)], np.float32)
        rgb = Image.fromarray(np.clip(arr[..., None] * tint, 0, 255).astype(np.uint8))
        if item.mode == "RGBA":
            rgb.putalpha(255)
            rgb.save(path)
        elif item.file.endswith(".png"):
            rgb.save(path)
        else:
            rgb.save(path, quality=90)
    if masks is not None:
        stem = Path(item.file).stem
        Image.fromarray(lungs.astype(np.uint8) * 255).save(masks / item.split / f"{stem}_lungs.png", compress_level=1)
        Image.fromarray(opacity.astype(np.uint8) * 255).save(
            masks / item.split / f"{stem}_opacity.png", compress_level=1
        )


# --------------------------------------------------------------------------------------------- metadata
def _counts(n: int, table: dict[str, int], minimum: int = 0) -> dict[str, int]:
    """Split `n` over the keys of `table` in proportion (largest remainders), each at least `minimum`."""
    keys = list(table)
    base = {k: minimum for k in keys} if n >= minimum * len(keys) else {k: 0 for k in keys}
    rest = n - sum(base.values())
    total = sum(table.values())
    exact = {k: rest * table[k] / total for k in keys}
    out = {k: base[k] + int(exact[k]) for k in keys}
    for k in sorted(keys, key=lambda k: -(exact[k] - int(exact[k])))[: n - sum(out.values())]:
        out[k] += 1
    return out


def _patient_sizes(rng: np.random.Generator, n: int) -> list[int]:
    """Images per patient, summing to n."""
    sizes: list[int] = []
    while sum(sizes) < n:
        sizes.append(int(rng.choice(_IMAGES_PER_PATIENT[0], p=_IMAGES_PER_PATIENT[1])))
    sizes[-1] -= sum(sizes) - n
    return sizes


def _uuid(rng: np.random.Generator) -> str:
    hexes = "".join(rng.choice(list("0123456789ABCDEF"), 32))
    return f"{hexes[:8]}-{hexes[8:12]}-{hexes[12:16]}-{hexes[16:20]}-{hexes[20:]}"


def _other_name(rng: np.random.Generator, subtype: str, k: int) -> str:
    if subtype == "streptococcus":
        return f"streptococcus-pneumoniae-pneumonia-temporal-evolution-{k}-day{int(rng.integers(0, 9))}"
    if subtype == "sars":
        f = k
        letter = "abcd"[int(rng.integers(0, 4))]
        return f"SARS-10.1148rg.242035193-g04mr34g{f:02d}{letter}-Fig{f}{letter}-day{int(rng.integers(1, 30))}"
    if subtype == "ards":
        return f"acute-respiratory-distress-syndrome-ards-{k}"
    if subtype == "covid-19" and rng.random() < 0.4:
        return f"1-s2.0-S{int(rng.integers(10**9, 10**10))}-main.pdf-00{k % 10}-{'ab'[k % 2]}1"
    return _uuid(rng)


def _plan(n_train: int, n_test: int, seed: int) -> list[_Item]:
    """File names, subtypes and patients of every image, in the metadata order of the real CSV."""
    rng = np.random.default_rng([seed, 0])
    n_other = max(min(5, n_train // 20), round(n_train * 70 / 5286))
    items: list[_Item] = []
    if n_train + n_test > 50000:
        raise InputError(f"synthetic set too large: {n_train + n_test} images (at most 50000)")
    taken = iter(rng.permutation(np.arange(1, 10 * (n_train + n_test) + 2000)).tolist())  # person numbers
    im_numbers = iter(rng.permutation(np.arange(1, 10000)).tolist())  # IM-NNNN numbers of normal patients
    counter = {"bacteria": 0, "virus": 0}
    patient_uid = iter(range(10**6))
    for split, n_kermany in (("train", n_train - n_other), ("test", n_test)):
        table = _KERMANY_TRAIN if split == "train" else _KERMANY_TEST
        counts = _counts(n_kermany, table, minimum=1)
        block: list[_Item] = []
        for i, size in enumerate(_patient_sizes(rng, counts["normal"])):
            num, series, uid = next(im_numbers), "NORMAL2-" if rng.random() < 0.55 else "", next(patient_uid)
            for j in range(size):
                tail = "-0001" if size == 1 else f"-0001-{j + 1:04d}"
                block.append(_Item(f"{series}IM-{num:04d}{tail}.jpeg", split, "normal", uid, i))
        block.sort(key=lambda it: (it.file.startswith("NORMAL2"), it.file), reverse=False)
        persons: list[tuple[int, int]] = []  # (person number, anatomy id) of bacterial patients
        sick: list[_Item] = []
        for sub in ("bacteria", "virus"):
            for size in _patient_sizes(rng, counts[sub]):
                if sub == "virus" and persons and rng.random() < 0.2:  # same number, other pathogen file
                    num, uid = persons[int(rng.integers(0, len(persons)))]
                else:
                    num, uid = next(taken), next(patient_uid)
                    persons.append((num, uid))
                for _ in range(size):
                    counter[sub] += 1
                    sick.append(_Item(f"person{num}_{sub}_{counter[sub]}.jpeg", split, sub, uid, 0))
        sick.sort(key=lambda it: it.file)
        items += block + sick
        if split == "train":
            others = [s for s, c in _counts(n_other, _OTHER, minimum=1).items() for _ in range(c)]
            others = [others[i] for i in rng.permutation(len(others))]
            for k, sub in enumerate(others):
                suffix, mode = _OTHER_FORMATS[k % len(_OTHER_FORMATS)]
                name = _other_name(rng, sub, k + 1) + suffix
                items.append(_Item(name, split, sub, next(patient_uid), 0, mode=mode, source="other"))
    for i, it in enumerate(items):
        it.index = i
    return items


def _metadata(items: list[_Item], rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, ids, nxt = [], [], 0
    first_other = next((i for i, it in enumerate(items) if it.source == "other"), -1)
    for i, it in enumerate(items):
        if it.source == "other" and (i == first_other or rng.random() < 0.3):
            nxt += int(rng.integers(1, 3))  # the real index has gaps in this block
        label, l1, l2 = _SUBTYPE_METADATA[it.subtype]
        rows.append((it.file, label, it.split.upper(), l2, l1))
        ids.append(nxt)
        nxt += 1
    columns = ["X_ray_image_name", "Label", "Dataset_type", "Label_2_Virus_category", "Label_1_Virus_category"]
    meta = pd.DataFrame(rows, columns=columns, index=ids)
    summary = (
        meta.groupby(["Label", "Label_1_Virus_category", "Label_2_Virus_category"])
        .size()
        .reset_index(name="Image_Count")
    )
    return meta, summary


def write_synthetic_set(
    out: str | os.PathLike, n_train: int = 400, n_test: int = 120, seed: int = 0, masks: bool = False
) -> Path:
    """Write a synthetic dataset in the Kaggle CoronaHack layout (+ masks) into `out`; return `out`."""
    from xraylib.fileio import atomic_dir

    out = Path(out).expanduser().absolute()
    if n_train < 20 or n_test < 4:
        raise InputError(f"synthetic set too small: --train {n_train} (at least 20), --test {n_test} (at least 4)")
    if out.exists():
        if not out.is_dir():
            raise InputError(f"{out}: exists and is not a directory")
        if holds_dataset(out) or (out / IMAGES_DIR).exists():
            raise InputError(f"{out}: holds a dataset already; remove it or choose another directory")
        if any(out.iterdir()):
            raise InputError(f"{out}: exists and is not empty; choose a new or empty directory")
    items = _plan(n_train, n_test, seed)
    meta, summary = _metadata(items, np.random.default_rng([seed, 4]))
    with atomic_dir(out.resolve()) as tmp:  # through a link to an empty folder: write into that folder
        images = tmp / IMAGES_DIR / IMAGES_DIR
        mask_dir = tmp / "masks" if masks else None
        for split in ("train", "test"):
            (images / split).mkdir(parents=True)
            if mask_dir is not None:
                (mask_dir / split).mkdir(parents=True)
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        pool = ThreadPoolExecutor(workers)
        try:
            jobs = [pool.submit(_render, it, seed, images / it.split, mask_dir) for it in items]
            for job in jobs:
                job.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        meta.to_csv(tmp / METADATA_CSV)
        summary.to_csv(tmp / SUMMARY_CSV)
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp made it private; a dataset folder is an ordinary one
    return out


def demo_data_dir(root: str | Path = DEMO_DATA) -> Path:
    """The demo's synthetic dataset (an absolute path), written on first use."""
    root = Path(root).resolve()
    if not (root / METADATA_CSV).is_file():
        write_synthetic_set(root, masks=True)
    return root
