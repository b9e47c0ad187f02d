"""gan-aug's plugin module: what it registers. Targets are strings, so listing plugins never imports torch."""

from medkit import (
    ArchitectureEntry,
    AugmenterEntry,
    DatasetEntry,
    LossEntry,
    Recipe,
    ScorerEntry,
    TrainerEntry,
    hookimpl,
)

MEDKIT_API = ">=1.0,<2"


@hookimpl
def register_recipes(register):
    register(
        Recipe(
            name="train",
            target="medkit_gan.recipes.train:train",
            config="medkit_gan.config:TrainGanConfig",
            summary="train (or fine-tune with --init/--freeze) a conditional StyleGAN2, then sample grids, "
            "generative metrics and a real vs real+synthetic classifier table",
            default=True,
        )
    )
    register(
        Recipe(
            name="generate",
            target="medkit_gan.recipes.generate:generate",
            config="medkit_gan.config:GenerateConfig",
            summary="N images per class (or what each class lacks) as class folders of PNGs or one H5 file",
        )
    )
    register(
        Recipe(
            name="metrics",
            target="medkit_gan.recipes.metrics:metrics",
            config="medkit_gan.config:MetricsRecipeConfig",
            summary="FID, Improved Precision & Recall (k=3), Density & Coverage (k=5) of a checkpoint, per class",
        )
    )
    register(
        Recipe(
            name="classify",
            target="medkit_gan.recipes.classify:classify",
            config="medkit_gan.config:ClassifyRecipeConfig",
            summary="the paper's classifier protocol: ResNet34, DenseNet169, EfficientNet-B2 on real, synthetic "
            "and real + synthetic data, 3 runs each, tables 1-2",
        )
    )
    register(
        Recipe(
            name="study",
            target="medkit_gan.recipes.study:study",
            config="medkit_gan.config:StudyGanConfig",
            summary="the paper's transfer grid: scratch, pretrained, frozen d1..d3, g1..g3, d1+g2, d2+g2, each "
            "measured and compared with classifiers",
            resumable=("trials",),
        )
    )


@hookimpl
def register_architectures(register):
    register(
        ArchitectureEntry(
            name="stylegan2",
            target="medkit_gan.models:stylegan2",
            task="generation",
            summary="conditional StyleGAN2: mapping with class embedding, modulated convs, skip G; residual D "
            "with minibatch stddev, projection and D2D-CE heads",
        )
    )


@hookimpl
def register_datasets(register):
    register(
        DatasetEntry(
            name="synthetic_histology",
            target="medkit_gan.datasets:synthetic_dataset",
            task="classification",
            embedded=True,
            summary="procedural H&E-like patches of 6 tissue classes (PATH-DT-MSU's names), imbalanced",
        )
    )
    register(
        DatasetEntry(
            name="histology_folders",
            target="medkit_gan.datasets:folder_dataset",
            task="classification",
            summary="class folders, NCT-CRC-HE-100K, BACH or PATH-DT-MSU-like layouts, cut into patches: "
            "folder_dataset(FOLDER)",
        )
    )


@hookimpl
def register_losses(register):
    register(
        LossEntry(
            name="d2d_ce",
            target="medkit_gan.losses:d2d_ce",
            summary="Data-to-Data Cross-Entropy (ReACGAN): temperature and positive margin as options",
        )
    )
    register(
        LossEntry(name="logistic", target="medkit_gan.losses:d_logistic", summary="non-saturating logistic")
    )
    register(
        LossEntry(name="acgan", target="medkit_gan.losses:acgan_ce", summary="AC-GAN class cross-entropy")
    )


@hookimpl
def register_scorers(register):
    register(
        ScorerEntry(
            name="generative",
            target="medkit_gan.scorers:GenerativeScorer",
            summary="FID, Improved Precision & Recall (k=3), Density & Coverage (k=5) on a named extractor",
        )
    )


@hookimpl
def register_augmenters(register):
    register(
        AugmenterEntry(
            name="gan",
            target="medkit_gan.augmenter:GanAugmenter",
            summary="adds a trained generator's synthetic images to a classification dataset",
        )
    )


@hookimpl
def register_trainers(register):
    register(
        TrainerEntry(
            name="adversarial",
            target="medkit_gan.training:GanTrainer",
            summary="StyleGAN2-ADA loop: lazy R1, path length, EMA, style mixing, adaptive augmentation",
        )
    )
