"""The tumour: its traits come from a few latent factors, then it is drawn into the anatomy.

Latent factors (standard normal per patient) and the traits they drive:

- proliferation: volume and the thickness of the enhancing rim
- necrosis: the share of the core that is necrotic
- infiltration: oedema extent (MRI; a ground-glass halo on CT) and shape irregularity
- heterogeneity: texture (fine intensity variation inside the tumour)
- location: anterior-posterior position in the brain; cranio-caudal in the lung

Each trait is its factor plus a little trait-specific noise, so images show the factors
well but not perfectly. MRI labels follow BraTS (1 necrosis / non-enhancing core, 2
oedema, 4 enhancing); CT has one label (1 tumour; the halo is not segmented).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage
from scipy.special import expit

from RadioGenomicsLib.synth.anatomy import Anatomy

FACTORS = ("proliferation", "necrosis", "infiltration", "heterogeneity", "location")
TRAIT_NOISE_SD = 0.3  # trait = factor + this much independent noise (latent units)

MEDIAN_RADIUS_MM = {"mri": 17.0, "ct": 12.0}
RADIUS_LOG_SD = 0.22
EDGE_WIDTH = 0.04  # soft tissue boundaries, as a share of the radius
TEXTURE_SMOOTHING_VOXELS = 1.0
LUNG_SLICE_MIN_SHARE = 0.25  # CT tumours sit in slices with at least this share of lung

NECROSIS = 1
OEDEMA = 2
ENHANCING = 4
CT_TUMOUR = 1

# relative MR signal (white matter on T1 = 1) per tissue and contrast
MR_SIGNAL = {
    #        csf   gm    wm   oedema necrosis core enhancing
    "t1":    (0.25, 0.62, 1.00, 0.55, 0.30, 0.60, 0.70),
    "t1gd":  (0.28, 0.65, 1.00, 0.58, 0.32, 0.75, 1.00),  # enhancing: scaled by the trait
    "t2":    (1.90, 1.05, 0.70, 1.50, 1.75, 1.30, 1.15),
    "flair": (0.25, 1.00, 0.75, 1.55, 0.80, 1.30, 1.15),
}
ENHANCEMENT_RANGE = (1.15, 1.7)  # T1Gd enhancing signal, low to high proliferation
# CT attenuation (HU) of the tumour's parts; the enhancing rim rises with proliferation
CT_HU = {"necrosis": 10.0, "core": 35.0, "rim": (45.0, 90.0), "halo": -550.0}
CT_TEXTURE_HU = 120.0  # HU per unit of texture: CT texture is additive, MR multiplicative


@dataclass(frozen=True)
class Traits:
    """A tumour's traits (what the images show), derived from the latent factors."""

    radius_mm: float  # radius of the sphere of the same volume (before irregularity)
    rim_fraction: float  # enhancing rim thickness, as a share of the radius
    necrosis_fraction: float  # radius of the necrotic core, as a share of the radius
    oedema_fraction: float  # oedema (halo) reach beyond the tumour, as a share of the radius
    irregularity: float  # amplitude of the boundary's bumps, as a share of the radius
    texture: float  # relative SD of the fine intensity variation inside
    enhancement: float  # 0..1, how strongly the rim enhances
    location_quantile: float  # 0..1 along the location axis

    def as_dict(self) -> dict[str, float]:
        return {name: round(float(value), 6) for name, value in asdict(self).items()}


def traits_from_factors(latent: np.ndarray, modality: str,
                        rng: np.random.Generator) -> Traits:
    """latent: (len(FACTORS),) standard-normal factor values of one patient."""
    f = dict(zip(FACTORS, latent + rng.normal(0, TRAIT_NOISE_SD, len(FACTORS))))
    necrosis = 0.05 + 0.7 * expit(1.6 * f["necrosis"])
    # the enhancing rim takes this share of the viable shell; the rest is non-enhancing core
    rim = (1.0 - necrosis) * (0.3 + 0.7 * expit(1.5 * f["proliferation"]))
    return Traits(
        radius_mm=MEDIAN_RADIUS_MM[modality] * float(np.exp(RADIUS_LOG_SD * f["proliferation"])),
        rim_fraction=rim,
        necrosis_fraction=necrosis,
        oedema_fraction=0.15 + 1.1 * expit(1.5 * f["infiltration"]),
        irregularity=0.04 + 0.3 * expit(1.5 * f["infiltration"] - 0.5),
        texture=0.03 + 0.25 * expit(1.5 * f["heterogeneity"]),
        enhancement=float(expit(1.5 * f["proliferation"])),
        location_quantile=float(expit(1.7 * f["location"])),
    )


@dataclass
class Tumour:
    """Soft memberships of the tumour's parts and the hard labels, in a box of the grid."""

    centre: np.ndarray  # voxel index (z, y, x) of the tumour's centre
    box: tuple[slice, slice, slice]
    weights: dict[str, np.ndarray]  # necrosis, core, enhancing, oedema: 0..1
    labels: np.ndarray  # uint8, segmentation labels inside the box
    texture: np.ndarray  # multiplicative texture inside the box (mean 1)


def _centre(anatomy: Anatomy, traits: Traits, rng: np.random.Generator) -> np.ndarray:
    """A voxel in white matter (MRI) or lung (CT), placed along the location axis."""
    if "lung" in anatomy.maps:
        host, axis = anatomy.maps["lung"].copy(), 0  # cranio-caudal: array axis z
        # not the apex and base slices, where the airways and gas make up the "lung"
        area = host.sum(axis=(1, 2))
        host[area < LUNG_SLICE_MIN_SHARE * area.max()] = False
    else:
        host, axis = anatomy.maps["wm"] > 0.6, 1  # anterior-posterior: array axis y
    # every second voxel is precise enough for choosing a centre, and 8 times faster
    depth_mm = ndimage.distance_transform_edt(host[::2, ::2, ::2], sampling=2 * anatomy.spacing)
    for share in (0.6, 0.4, 0.2, 0.0):  # deep enough for the tumour, relaxed if need be
        candidates = np.argwhere(depth_mm > share * traits.radius_mm) * 2
        if len(candidates) >= 20:
            break
    order = np.argsort(candidates[:, axis], kind="stable")
    position = traits.location_quantile * (len(order) - 1)
    spread = max(1, len(order) // 20)
    pick = int(np.clip(position + rng.integers(-spread, spread + 1), 0, len(order) - 1))
    return candidates[order[pick]].astype(float)


def _shape(directions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A smooth random bump pattern over directions (..., 3) -> values in about -1..1."""
    pattern = np.zeros(directions.shape[:-1], dtype=np.float32)
    for frequency in (1.0, 1.5, 2.0, 2.5, 3.0, 3.5):
        axis = rng.normal(size=3)
        axis *= frequency * np.pi / np.linalg.norm(axis)
        pattern += np.cos(directions @ axis.astype(np.float32) + rng.uniform(0, 2 * np.pi))
    return pattern / 2.5


def _smooth_step(distance: np.ndarray, edge: float | np.ndarray) -> np.ndarray:
    """1 well inside `edge`, 0 well outside, smooth across EDGE_WIDTH."""
    return expit((edge - distance) / EDGE_WIDTH).astype(np.float32)


def draw(anatomy: Anatomy, traits: Traits, rng: np.random.Generator) -> Tumour:
    """Place the tumour: a bumpy sphere with necrotic core, enhancing rim and oedema."""
    centre = _centre(anatomy, traits, rng)
    reach_mm = traits.radius_mm * (1 + traits.irregularity) * (1 + traits.oedema_fraction) + 4
    half = np.ceil(reach_mm / anatomy.spacing).astype(int)
    shape = np.array(next(iter(anatomy.maps.values())).shape)
    low = np.maximum(centre.astype(int) - half, 0)
    high = np.minimum(centre.astype(int) + half + 1, shape)
    box = tuple(slice(a, b) for a, b in zip(low, high))

    grid = np.stack(np.meshgrid(*[np.arange(a, b, dtype=np.float32) for a, b in zip(low, high)],
                                indexing="ij"), axis=-1)
    offset_mm = (grid - centre.astype(np.float32)) * anatomy.spacing.astype(np.float32)
    radius = np.linalg.norm(offset_mm, axis=-1)
    directions = offset_mm / np.maximum(radius, 1e-3)[..., None]
    elongation = np.exp(rng.normal(0, 0.12, 3)).astype(np.float32)
    stretched = np.linalg.norm(offset_mm / elongation, axis=-1)
    distance = stretched / (traits.radius_mm * (1 + traits.irregularity * _shape(directions, rng)))

    host = _host_share(anatomy, box)
    oedema_edge = 1 + traits.oedema_fraction * _oedema_reach(anatomy, box)
    enhancing_edge = 1 - traits.rim_fraction
    inside = {
        "necrosis": _smooth_step(distance, traits.necrosis_fraction),
        "solid": _smooth_step(distance, enhancing_edge),
        "tumour": _smooth_step(distance, 1.0),
        "oedema": _smooth_step(distance, oedema_edge),
    }
    weights = {
        "necrosis": inside["necrosis"] * host,
        "core": np.clip(inside["solid"] - inside["necrosis"], 0, 1) * host,
        "enhancing": np.clip(inside["tumour"] - inside["solid"], 0, 1) * host,
        "oedema": np.clip(inside["oedema"] - inside["tumour"], 0, 1) * host,
    }
    labels = _labels(anatomy, distance, enhancing_edge, oedema_edge, host)
    noise = ndimage.gaussian_filter(rng.standard_normal(distance.shape, dtype=np.float32),
                                    TEXTURE_SMOOTHING_VOXELS)
    texture = 1 + traits.texture * noise / max(float(noise.std()), 1e-6)
    return Tumour(centre, box, weights, labels, texture.astype(np.float32))


def _host_share(anatomy: Anatomy, box: tuple[slice, ...]) -> np.ndarray:
    """How much of each voxel can hold tumour: brain tissue (MRI) or body (CT)."""
    if "ct" in anatomy.maps:
        body = (anatomy.maps["ct"][box] > -900) | anatomy.maps["lung"][box]
        return body.astype(np.float32)
    return sum(anatomy.maps[t][box] for t in ("csf", "gm", "wm")).clip(0, 1)


def _oedema_reach(anatomy: Anatomy, box: tuple[slice, ...]) -> np.ndarray | float:
    """Oedema spreads along white matter; a lung halo spreads in lung."""
    if "ct" in anatomy.maps:
        return 1.0
    return 0.3 + 0.7 * ndimage.gaussian_filter(anatomy.maps["wm"][box], 1.0)


def _labels(anatomy: Anatomy, distance: np.ndarray, enhancing_edge: float,
            oedema_edge: np.ndarray | float, host: np.ndarray) -> np.ndarray:
    labels = np.zeros(distance.shape, dtype=np.uint8)
    if "ct" in anatomy.maps:
        labels[distance < 1] = CT_TUMOUR
    else:
        labels[distance < oedema_edge] = OEDEMA
        labels[distance < 1] = ENHANCING
        labels[distance < enhancing_edge] = NECROSIS  # BraTS 1: necrosis and non-enhancing core
    labels[host < 0.5] = 0
    return labels


def mr_signals(anatomy: Anatomy, tumour: Tumour, traits: Traits) -> dict[str, np.ndarray]:
    """Relative MR signal per contrast: tissue mixture, with the tumour's parts replacing it."""
    tissues = [anatomy.maps[t] for t in ("csf", "gm", "wm")]
    parts = [tumour.weights[p] for p in ("oedema", "necrosis", "core", "enhancing")]
    replaced = 1 - sum(parts)
    signals = {}
    for contrast, levels in MR_SIGNAL.items():
        signal = sum(level * tissue for level, tissue in zip(levels[:3], tissues))
        levels = list(levels)
        if contrast == "t1gd":
            low, high = ENHANCEMENT_RANGE
            levels[6] = low + (high - low) * traits.enhancement
        inside = sum(level * part for level, part in zip(levels[3:], parts))
        signal[tumour.box] = signal[tumour.box] * replaced + inside * tumour.texture
        signals[contrast] = signal.astype(np.float32)
    return signals


def ct_attenuation(anatomy: Anatomy, tumour: Tumour, traits: Traits) -> np.ndarray:
    """Hounsfield units with the tumour (and its ground-glass halo) drawn in."""
    hu = anatomy.maps["ct"].copy()
    local = hu[tumour.box]
    low, high = CT_HU["rim"]
    rim_hu = low + (high - low) * traits.enhancement
    solid = (tumour.weights["necrosis"] * CT_HU["necrosis"] + tumour.weights["core"] * CT_HU["core"]
             + tumour.weights["enhancing"] * rim_hu)
    solid_share = tumour.weights["necrosis"] + tumour.weights["core"] + tumour.weights["enhancing"]
    # the halo only raises lung attenuation towards ground glass
    halo = tumour.weights["oedema"] * np.maximum(CT_HU["halo"] - local, 0) * 0.8
    texture = solid_share * (tumour.texture - 1) * CT_TEXTURE_HU
    hu[tumour.box] = (local + halo) * (1 - solid_share) + solid + texture
    return hu
