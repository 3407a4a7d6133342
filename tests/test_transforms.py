import numpy as np
import pytest
import torch
from PIL import Image

from reid.data.transforms import (MEAN_SIZE, Normalizer, TrainAugment, compute_mean_image, load_eval_transform,
                                  random_erase)
from reid.files.mean_image import write_mean_image


def write_images(tmp_path, n=4, size=(32, 16)):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        arr = rng.integers(0, 256, size=(size[0], size[1], 3), dtype=np.uint8)
        p = tmp_path / f"{i}.png"  # lossless, so the mean can be checked exactly
        Image.fromarray(arr).save(p)
        paths.append(p)
    return paths


def test_mean_image_matches_a_direct_computation(tmp_path):
    paths = write_images(tmp_path, size=MEAN_SIZE)
    stats = compute_mean_image(paths)
    direct = np.mean([np.asarray(Image.open(p), dtype=np.float64) / 255 for p in paths], axis=0)
    assert np.allclose(stats["mean"].permute(1, 2, 0).numpy(), direct, atol=1e-5)
    assert stats["mean"].shape == (3, *MEAN_SIZE)
    pix = np.stack([np.asarray(Image.open(p), dtype=np.float64) / 255 for p in paths])
    assert np.allclose(stats["std"].numpy(), pix.reshape(-1, 3).std(axis=0), atol=1e-4)


def test_eval_transform_centres_the_training_mean(tmp_path):
    paths = write_images(tmp_path, size=(64, 32))
    stats = compute_mean_image(paths)
    write_mean_image(stats, tmp_path / "mean.pt")
    tf = load_eval_transform(tmp_path / "mean.pt", 32, 16)
    batch = torch.stack([tf(p) for p in paths])
    assert batch.shape == (4, 3, 32, 16)
    # mean over the training images of the normalised input is ~0 everywhere
    assert batch.mean(0).abs().max() < 0.05
    assert torch.allclose(tf(Image.open(paths[0])), batch[0])


def test_augmentation_is_a_function_of_the_generator_seed():
    stats = {"mean": torch.zeros(3, *MEAN_SIZE), "std": torch.ones(3)}
    aug = TrainAugment(stats, 32, 16, flip=0.5, erasing=0.5)
    img = torch.rand(3, 40, 20)
    outs = [aug(img, torch.Generator().manual_seed(s)) for s in range(8)]
    again = [aug(img, torch.Generator().manual_seed(s)) for s in range(8)]
    assert all(torch.equal(a, b) for a, b in zip(outs, again))
    assert len({o.sum().item() for o in outs}) > 1


def test_random_erasing_sets_a_rectangle_to_zero():
    img = torch.ones(3, 32, 16)
    out = random_erase(img, torch.Generator().manual_seed(1), probability=1.0)
    zero = (out == 0).all(0)
    ys, xs = torch.nonzero(zero, as_tuple=True)
    assert len(ys) > 0
    assert zero[ys.min():ys.max() + 1, xs.min():xs.max() + 1].all()  # a filled rectangle
    assert torch.equal(random_erase(img, torch.Generator(), probability=0.0), img)


def test_normalizer_resizes():
    stats = {"mean": torch.full((3, *MEAN_SIZE), 0.5), "std": torch.full((3,), 0.25)}
    out = Normalizer(stats, 16, 8)(torch.full((3, 20, 10), 0.75))
    assert out.shape == (3, 16, 8) and torch.allclose(out, torch.ones_like(out))


def test_mean_only_normalisation_subtracts_the_mean_image_and_nothing_else(tmp_path):
    paths = write_images(tmp_path, size=(64, 32))
    stats = compute_mean_image(paths)
    img = torch.rand(3, 32, 16)
    mean = torch.nn.functional.interpolate(stats["mean"][None], size=(32, 16), mode="bilinear",
                                           align_corners=False, antialias=True)[0]
    torch.testing.assert_close(Normalizer(stats, 32, 16, "mean")(img), img - mean)
    torch.testing.assert_close(Normalizer(stats, 32, 16)(img), (img - mean) / stats["std"].view(3, 1, 1))
    with pytest.raises(ValueError, match="train.input_norm 'std' is unknown"):
        Normalizer(stats, 32, 16, "std")


def test_mean_image_at_the_input_size_travels_with_the_model(tmp_path):
    from reid.data.transforms import training_augment, training_normalisation

    paths = write_images(tmp_path, size=(64, 32))
    write_mean_image(compute_mean_image(paths), tmp_path / "mean.pt")
    cfg = dict(height=32, width=16, horizontal_flip=0.0, random_erasing=0.0, input_norm="mean",
               mean_image_size="input")
    norm = training_normalisation(paths, cfg)
    # the mean of the images each resized to 32 x 16, not the stored 256 x 128 mean resized
    direct = torch.stack([torch.nn.functional.interpolate(
        torch.from_numpy(np.asarray(Image.open(p), dtype=np.float32) / 255).permute(2, 0, 1)[None], size=(32, 16),
        mode="bilinear", align_corners=False, antialias=True)[0] for p in paths]).mean(0)
    torch.testing.assert_close(norm["mean"], direct, atol=1e-6, rtol=0)
    stored = load_eval_transform(tmp_path / "mean.pt", 32, 16)
    assert not torch.allclose(stored(paths[0]), load_eval_transform(tmp_path / "mean.pt", 32, 16, norm)(paths[0]))
    augment, again = training_augment(tmp_path / "mean.pt", paths, cfg)
    img = torch.rand(3, 64, 32)
    gen = torch.Generator().manual_seed(0)
    # training and test time subtract the same image
    torch.testing.assert_close(augment(img, gen), load_eval_transform(tmp_path / "mean.pt", 32, 16, again)(
        Image.fromarray((img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))), atol=1e-2, rtol=0)
    assert training_normalisation(paths, {**cfg, "mean_image_size": "stored"}) == {"input_norm": "mean",
                                                                                     "mean_image_size": "stored"}
    with pytest.raises(ValueError, match="train.mean_image_size 'native' is unknown"):
        training_normalisation(paths, {**cfg, "mean_image_size": "native"})
