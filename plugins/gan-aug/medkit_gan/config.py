"""Options of gan-aug's recipes (torch-free, so `medkit run gan-aug --help` stays instant).

Defaults are sized for a 2-core CPU: a 32 px conditional StyleGAN2 of a few hundred thousand parameters on the
embedded histology-like set, so that `medkit run gan-aug` trains, measures and runs the classifier comparison in
under 10 minutes. `configs/paper.yaml` holds the paper's set-up (256 px, 512-d z and w, 8 mapping layers, the full
StyleGAN2 widths, 200k+ images). Every value named "paper" below is from the spec (`shared/spec/gan-aug.md`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from medkit import UsageError, option
from medkit.config import RecipeConfig

FREEZE_STUDY = ("scratch", "pretrained", "d1", "d2", "d3", "g1", "g2", "g3", "d1,g2", "d2,g2")


@dataclass(kw_only=True)
class DataConfig:
    """Where the real images come from: --data (a layout below) or the embedded synthetic histology."""

    layout: Literal["auto", "class_folders", "nct_crc", "bach", "path_dt_msu"] = option(
        "auto",
        help="--data layout: class_folders (FOLDER/<class>/*.png|tif), nct_crc (NCT-CRC-HE-100K), bach (BACH "
        "2048x1536 TIFFs, cut into patches), path_dt_msu (FOLDER/{train,val}/<class>/ regions, cut into "
        "patches); auto detects it from the folder names",
    )
    patch_size: int | None = option(
        None, help="cut large images into patches of this side (null: the layout's, paper 224 / BACH 512)"
    )
    overlap: int | None = option(None, help="overlap of neighbouring patches (null: the layout's, 112 / 256)")
    scale: float = option(
        1.0, help="embedded data: multiplies the image counts per class (1.0: ~700 train, 240 val images)"
    )
    embedded_seed: int = option(
        0, help="embedded data: which generated set (the study's base model learns from another one, seed 1)"
    )
    val_fraction: float = option(
        0.25,
        help="--data without its own validation split: share of each class's slides/images held out for the "
        "classifier comparison (paper: BACH 75/25)",
    )


@dataclass(kw_only=True)
class NetworkConfig:
    """The conditional StyleGAN2's size (paper: 256 px, z and w 512, 8 mapping layers, channel_base 16384)."""

    resolution: int = option(
        32, help="generator output side, a power of two 8-512 (paper: 256, from 224 patches)"
    )
    z_dim: int = option(64, help="latent z size (paper: 512)")
    w_dim: int = option(64, help="intermediate latent w size (paper: 512)")
    mapping_layers: int = option(4, help="fully connected layers of the mapping network (paper: 8)")
    channel_base: int = option(2048, help="channels at resolution r = min(channel_base / r, channel_max)")
    channel_max: int = option(64, help="most channels of any layer (paper: 512)")
    embed_dim: int = option(64, help="D2D-CE embedding size of the discriminator (ReACGAN: 512)")
    projection: bool = option(True, help="projection conditioning in D's logit (Miyato & Koyama)")


@dataclass(kw_only=True)
class GanTrainingConfig:
    """StyleGAN2 / StyleGAN2-ADA training (spec, "The components"); lengths count images shown to D."""

    batch_size: int = option(
        8,
        help="images per step (paper's StyleGAN2: 32-64 on GPUs; on a CPU's budget twice the steps at 8 beat 16)",
    )
    total_images: int = option(8_000, help="training length in images shown to D (paper: millions)")
    lr_g: float = option(0.0025, help="Adam learning rate of G (StyleGAN2: 0.0025)")
    lr_d: float = option(0.0025, help="Adam learning rate of D (StyleGAN2: 0.0025)")
    betas: list[float] = option(default_factory=lambda: [0.0, 0.99], help="Adam betas (StyleGAN2: 0, 0.99)")
    r1_gamma: float | None = option(
        None, help="R1 weight; null: 0.0002 * resolution^2 / batch (StyleGAN2-ADA)"
    )
    r1_interval: int = option(16, help="lazy R1 every N steps (StyleGAN2: 16)")
    pl_weight: float = option(2.0, help="path-length regularisation weight (StyleGAN2: 2; 0 turns it off)")
    pl_interval: int = option(4, help="lazy path-length regularisation every N steps (StyleGAN2: 4)")
    pl_batch_shrink: int = option(2, help="path-length batch = batch_size / this")
    ema_half_life_images: float = option(5_000, help="half-life of G's EMA in images (StyleGAN2: 10k)")
    ema_rampup: float | None = option(0.05, help="EMA ramp-up (StyleGAN2-ADA: 0.05); null: none")
    mixing_prob: float = option(0.9, help="style mixing probability (StyleGAN2: 0.9)")
    cond_loss: Literal["d2d_ce", "acgan", "projection", "none"] = option(
        "d2d_ce",
        help="conditional loss: d2d_ce (ReACGAN, the paper's), acgan (AC-GAN cross-entropy), projection "
        "(projection logit only), none",
    )
    cond_weight: float = option(1.0, help="weight of the conditional loss")
    d2d_temperature: float = option(0.5, help="D2D-CE temperature t (StudioGAN: 0.5)")
    d2d_margin: float = option(0.98, help="D2D-CE positive margin m_p (StudioGAN: 0.98)")
    ada_preset: str = option("bgc", help="ADA augmentations: b, g, c, bg, bgc (histology: bgc) or none")
    ada_target: float = option(0.6, help="ADA's target for r_t = E[sign(D(real))] (0.6)")
    ada_interval: int = option(4, help="adjust ADA's p every N steps (4)")
    ada_speed_images: int = option(
        100_000, help="images over which p can move from 0 to 1 (ADA: 500k; shorter for short CPU runs)"
    )
    ada_p: float = option(0.0, help="initial ADA probability")
    ada_fixed: bool = option(False, help="keep p at ada_p instead of adapting it")
    balanced: bool = option(True, help="class-balanced sampling of real images (paper 001)")
    eval_every_images: int | None = option(
        4_000, help="evaluate the metrics of the stopping rule every N images; null: only at the end"
    )
    checkpoint_every_images: int = option(2_000, help="write checkpoints/last.pt every N images")
    stop_patience: int | None = option(
        None,
        help="paper's stopping rule: stop after N evaluations in which no metric (FID, P, R, D, C) improved; "
        "null: train for total_images",
    )


@dataclass(kw_only=True)
class MetricsConfig:
    """Generative metrics: FID, Improved Precision & Recall (k=3), Density & Coverage (k=5)."""

    extractor: Literal["lite0", "inception"] = option(
        "lite0",
        help="feature extractor: lite0 (EfficientNet-Lite0 ImageNet, shipped offline) or inception (FID's "
        "Inception-v3; needs weights=PATH to pt_inception-2015-12-05-6726825d.pth)",
    )
    weights: Path | None = option(None, help="local weights file of the extractor (inception)")
    input_size: int = option(
        128,
        help="lite0: side its input is resized to (ImageNet: 224; 128 is ~3x faster on a CPU); inception: 299",
    )
    images: int = option(480, help="generated images for the final report (balanced over classes)")
    eval_images: int = option(240, help="generated images per evaluation of the stopping rule")
    k_pr: int = option(3, help="k of Improved Precision & Recall (paper: 3)")
    k_dc: int = option(5, help="k of Density & Coverage (paper: 5)")
    batch_size: int = option(64, help="images per forward pass of the extractor")


@dataclass(kw_only=True)
class ClassifyConfig:
    """The classifier comparison (paper 001, tables 1-2): real vs synthetic vs real + synthetic."""

    archs: list[str] = option(
        default_factory=lambda: ["resnet34"], help="classifiers: resnet34, densenet169, efficientnet_b2"
    )
    settings: list[Literal["real", "synthetic", "real+synthetic"]] = option(
        default_factory=lambda: ["real", "real+synthetic"],
        help="training data compared (paper: PATH-DT-MSU real vs synthetic; BACH real vs real+synthetic)",
    )
    runs: int = option(1, help="runs per classifier and setting (paper: 3)")
    epochs: int = option(6, help="classifier epochs")
    batch_size: int = option(32, help="images per batch")
    lr: float = option(1e-3, help="Adam learning rate (the paper names no optimiser)")
    images_per_epoch: int | None = option(
        None,
        help="class-balanced draws per epoch, the same for every setting (null: the real training set's size, so "
        "real + synthetic does not win by training longer)",
    )
    synthetic_per_class: int | None = option(
        None,
        help="synthetic images per class (null: as many as the largest real class, so real + synthetic is "
        "balanced as in the paper's BACH protocol)",
    )
    weights: str | None = option(
        "random",
        help="classifier weights: random, a local ImageNet state-dict file, or null to look in the torch hub "
        "cache (paper: ImageNet-pretrained)",
    )
    truncation: float = option(1.0, help="truncation psi of the synthetic images")


def check_resolution(value: int, key: str) -> None:
    if value < 8 or value > 512 or value & (value - 1):
        raise UsageError(
            f"{key}={value}: the StyleGAN2 generator needs a power of two from 8 to 512 (e.g. 32, 256)"
        )


@dataclass(kw_only=True)
class TrainGanConfig(RecipeConfig):
    arch: str = option("stylegan2", help="generator and discriminator pair (--arch): stylegan2")
    network: NetworkConfig = option(default_factory=NetworkConfig, help="network size")
    training: GanTrainingConfig = option(default_factory=GanTrainingConfig, help="GAN training")
    data_options: DataConfig = option(default_factory=DataConfig, help="real images")
    init: Path | None = option(
        None, help="start from this gan-aug checkpoint (--init; paper: the base model trained on NCT-CRC-HE)"
    )
    freeze: str = option(
        "",
        help="blocks kept at the --init weights (--freeze), e.g. d1,g2 (paper's naming: g from 4x4 up, d from "
        "the image down)",
    )
    metrics: MetricsConfig = option(default_factory=MetricsConfig, help="generative metrics")
    grid_per_class: int = option(8, help="samples per class in the sample grids")
    classify: ClassifyConfig = option(
        default_factory=ClassifyConfig, help="classifier comparison after training"
    )
    compare_classifiers: bool = option(True, help="run the classifier comparison after training")

    def validate(self) -> None:
        check_resolution(self.network.resolution, "network.resolution")
        if self.freeze and self.init is None:
            raise UsageError(
                f"--freeze {self.freeze}: frozen blocks keep the weights of a pretrained model; give one with "
                "--init CHECKPOINT"
            )
        if self.training.batch_size < 2:
            raise UsageError(
                "training.batch_size must be at least 2 (minibatch stddev and D2D-CE need pairs)"
            )
        for key in ("total_images", "checkpoint_every_images"):
            if getattr(self.training, key) < 1:
                raise UsageError(f"training.{key} must be positive")


@dataclass(kw_only=True)
class GenerateConfig(RecipeConfig):
    checkpoint: Path | None = option(
        None, help="a gan-aug checkpoint; default: the latest train run's best.pt"
    )
    per_class: int | None = option(64, help="images per class (balanced); ignored when `fill_to` is set")
    fill_to: dict[str, int] | None = option(
        None, help="generate what each class lacks to reach these counts, e.g. {DYS: 500, TUM: 500}"
    )
    truncation: float = option(1.0, help="truncation psi (1: none; lower: more typical, less varied images)")
    format: Literal["png", "h5"] = option("png", help="png: class folders of PNGs; h5: one images.h5")
    batch_size: int = option(64, help="images per generator call")
    use_ema: bool = option(True, help="generate with G's exponential moving average (as StyleGAN2)")


@dataclass(kw_only=True)
class MetricsRecipeConfig(RecipeConfig):
    checkpoint: Path | None = option(
        None, help="a gan-aug checkpoint; default: the latest train run's best.pt"
    )
    data_options: DataConfig = option(default_factory=DataConfig, help="the real images compared against")
    split: Literal["train", "val"] = option("train", help="real split (paper: the training set)")
    metrics: MetricsConfig = option(default_factory=MetricsConfig, help="generative metrics")
    truncation: float = option(1.0, help="truncation psi of the generated images")


@dataclass(kw_only=True)
class ClassifyRecipeConfig(RecipeConfig):
    checkpoint: Path | None = option(
        None,
        help="generate the synthetic images with this checkpoint; default: the latest train run's best.pt",
    )
    synthetic: Path | None = option(
        None, help="or read them from a `generate` output (images.h5 or class folders of PNGs)"
    )
    data_options: DataConfig = option(default_factory=DataConfig, help="real images")
    resolution: int | None = option(
        None, help="side the real images are brought to (null: the synthetic images' / the generator's)"
    )
    classify: ClassifyConfig = option(
        default_factory=lambda: ClassifyConfig(
            archs=["resnet34", "densenet169", "efficientnet_b2"],
            settings=["real", "synthetic", "real+synthetic"],
            runs=3,
        ),
        help="the comparison (paper: three classifiers, three runs each)",
    )


@dataclass(kw_only=True)
class StudyGanConfig(RecipeConfig):
    base: Path | None = option(
        None,
        help="the base model (a gan-aug checkpoint trained on a large set); null: train one first on a larger "
        "embedded set (the paper's NCT-CRC-HE base model, in small)",
    )
    trials: list[str] = option(
        default_factory=lambda: list(FREEZE_STUDY),
        help="the paper's grid: scratch, pretrained, d1..d3, g1..g3, d1,g2, d2,g2",
    )
    network: NetworkConfig = option(default_factory=NetworkConfig, help="network size (every trial)")
    training: GanTrainingConfig = option(default_factory=GanTrainingConfig, help="GAN training (every trial)")
    base_images: int = option(24_000, help="training length of the base model when `base` is null")
    base_scale: float = option(
        3.0,
        help="size of the base model's embedded set, relative to the default (the paper's base set is large)",
    )
    data_options: DataConfig = option(
        default_factory=lambda: DataConfig(scale=0.5), help="the small set every trial trains on"
    )
    metrics: MetricsConfig = option(default_factory=MetricsConfig, help="generative metrics of every trial")
    classify: ClassifyConfig = option(default_factory=ClassifyConfig, help="classifier comparison per trial")

    def validate(self) -> None:
        check_resolution(self.network.resolution, "network.resolution")
        unknown = [t for t in self.trials if t not in FREEZE_STUDY and not _is_freeze_spec(t)]
        if unknown:
            raise UsageError(
                f"trials {unknown}: a trial is scratch, pretrained or a --freeze spec such as d1,g2; the paper's "
                f"grid is {', '.join(FREEZE_STUDY)}"
            )
        if len(set(self.trials)) != len(self.trials):
            raise UsageError(f"trials {self.trials}: each trial may appear once")


def _is_freeze_spec(text: str) -> bool:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    return bool(parts) and all(p[:1] in "dg" and p[1:].isdigit() for p in parts)
