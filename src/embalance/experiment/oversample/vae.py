"""A small VAE per minority class, trained on the fold's training part; synthetic rows are decoded samples."""

from __future__ import annotations

import contextlib
import math
import numbers
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from sklearn.utils._param_validation import Interval, StrOptions
from torch import nn

from embalance.experiment.oversample.base import _TorchOverSampler
from embalance.runtime import cpu_threads

if TYPE_CHECKING:
    from embalance.experiment.oversample.base import Label, Plan, RandomState, SamplingStrategy

@dataclass
class VAEConfig:
    n_features: int
    latent_dim: int = 16
    hidden_dim: int = 128


class Encoder(nn.Module):
    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.hidden = nn.Linear(config.n_features, config.hidden_dim)
        self.head = nn.Linear(config.hidden_dim, 2 * config.latent_dim)  # mean and log-variance

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self.hidden(x))  # (B, H)
        mu, logvar = self.head(h).chunk(2, dim=-1)  # (B, L), (B, L)
        return mu, logvar


class Decoder(nn.Module):
    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.hidden = nn.Linear(config.latent_dim, config.hidden_dim)
        self.out = nn.Linear(config.hidden_dim, config.n_features)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.hidden(z))  # (B, H)
        return self.out(h)  # (B, D)


class VAE(nn.Module):
    """A one-hidden-layer Gaussian VAE; it models standardised features of one class."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    def init_weights(self, generator: torch.Generator) -> None:
        """nn.Linear's default init (U(-1/sqrt(fan_in), 1/sqrt(fan_in))) from a local generator."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                bound = 1.0 / math.sqrt(module.in_features)
                nn.init.uniform_(module.weight, -bound, bound, generator=generator)
                nn.init.uniform_(module.bias, -bound, bound, generator=generator)

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x)  # (B, L), (B, L)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + torch.exp(0.5 * logvar) * eps  # (B, L)
        return self.decoder(z), mu, logvar  # (B, D), (B, L), (B, L)

    @staticmethod
    def loss(
        x: torch.Tensor, recon: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, beta: float
    ) -> torch.Tensor:
        """Mean over the batch of squared reconstruction error + beta * KL(q(z|x) || N(0, I))."""
        rec = ((recon - x) ** 2).sum(dim=1)  # (B,)
        kl = -0.5 * (1.0 + logvar - mu * mu - logvar.exp()).sum(dim=1)  # (B,)
        return (rec + beta * kl).mean()


def build_vae(config: VAEConfig, device: torch.device, generator: torch.Generator) -> VAE:
    """A VAE whose weights come from ``generator`` (built on the meta device: no global RNG use)."""
    with torch.device("meta"):
        model = VAE(config)
    model = model.to_empty(device=device)
    model.init_weights(generator)
    return model


class VAEOverSampler(_TorchOverSampler):
    """Oversampling by a variational autoencoder trained per class on that class's samples.

    The features of the class are standardised (mean 0, standard deviation 1 per feature; constant
    features keep scale 1), a `VAE` is trained on them with Adam, and synthetic samples are the
    decoder's means, mapped back to the original scale:

    - ``sample_from="prior"``: ``z ~ N(0, I)``; the samples cover what the model learned of the
      whole class.
    - ``sample_from="posterior"``: a real sample of the class is drawn uniformly, encoded, and
      ``z ~ q(z | x)`` is decoded; the samples stay near real ones (useful when the posterior does
      not fill the prior, e.g. with few samples).

    Parameters: ``sampling_strategy``, ``random_state``, ``latent_dim`` (16), ``hidden_dim`` (128),
    ``beta`` (1.0, weight of the KL term), ``epochs`` (100), ``lr`` (1e-3), ``batch_size`` (64),
    ``sample_from``, ``device``. Training runs in float32 whatever the input type, and on CPU in
    one thread (torch's thread count is restored afterwards): the matrices are too small to share.
    Fitted: ``sampling_strategy_``, ``n_synthetic_``, ``k_effective_`` (empty), ``skipped_`` (empty), ``status_``,
    ``reason_``, ``device_``, ``models_`` (class -> trained `VAE`, on ``device_``),
    ``scalers_`` (class -> (mean, scale) arrays), ``train_loss_`` (class -> mean loss of the last
    epoch).
    """

    _parameter_constraints: ClassVar[dict] = {
        **_TorchOverSampler._parameter_constraints,
        "latent_dim": [Interval(numbers.Integral, 1, None, closed="left")],
        "hidden_dim": [Interval(numbers.Integral, 1, None, closed="left")],
        "beta": [Interval(numbers.Real, 0, None, closed="left")],
        "epochs": [Interval(numbers.Integral, 1, None, closed="left")],
        "lr": [Interval(numbers.Real, 0, None, closed="neither")],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "sample_from": [StrOptions({"prior", "posterior"})],
    }

    def __init__(
        self,
        *,
        sampling_strategy: SamplingStrategy = "auto",
        random_state: RandomState = None,
        latent_dim: int = 16,
        hidden_dim: int = 128,
        beta: float = 1.0,
        epochs: int = 100,
        lr: float = 1e-3,
        batch_size: int = 64,
        sample_from: str = "prior",
        device: str = "auto",
    ) -> None:
        super().__init__(sampling_strategy=sampling_strategy)
        self.random_state = random_state
        self.latent_dim = latent_dim
        self.hidden_dim = hidden_dim
        self.beta = beta
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.sample_from = sample_from
        self.device = device

    def _prepare(self, X_t: torch.Tensor, y_t: torch.Tensor) -> None:
        self.models_: dict = {}
        self.scalers_: dict = {}
        self.train_loss_: dict = {}

    def _plan(
        self,
        klass: Label,
        code: int,
        class_idx: torch.Tensor,
        n_new: int,
        X_t: torch.Tensor,
        y_t: torch.Tensor,
        generator: torch.Generator,
    ) -> Plan | None:
        device = X_t.device
        X_class = X_t.index_select(0, class_idx).float()  # (n_min, d)
        mean = X_class.mean(dim=0)
        scale = X_class.std(dim=0, unbiased=False)
        scale = torch.where(scale > 1e-12, scale, torch.ones_like(scale))
        Z = (X_class - mean) / scale  # (n_min, d) standardised

        config = VAEConfig(n_features=X_t.shape[1], latent_dim=self.latent_dim, hidden_dim=self.hidden_dim)
        model = build_vae(config, device, generator)
        with cpu_threads(1) if device.type == "cpu" else contextlib.nullcontext():
            self.train_loss_[klass] = _train_vae(
                model, Z, self.epochs, self.lr, self.batch_size, self.beta, generator
            )
        model.eval()
        with torch.no_grad():
            if self.sample_from == "prior":
                z = torch.randn((n_new, config.latent_dim), generator=generator, device=device)
            else:
                picks = torch.randint(0, Z.shape[0], (n_new,), generator=generator, device=device)
                mu, logvar = model.encoder(Z.index_select(0, picks))
                eps = torch.randn(mu.shape, generator=generator, device=device)
                z = mu + torch.exp(0.5 * logvar) * eps
            new = (model.decoder(z) * scale + mean).to(X_t.dtype)  # (n_new, d)
        self.models_[klass] = model
        self.scalers_[klass] = (mean.cpu().numpy(), scale.cpu().numpy())

        def write(out: torch.Tensor) -> None:
            out.copy_(new)

        return n_new, write


def _train_vae(
    model: VAE,
    Z: torch.Tensor,
    epochs: int,
    lr: float,
    batch_size: int,
    beta: float,
    generator: torch.Generator,
) -> float:
    """Adam on mini-batches drawn without replacement each epoch; returns the last epoch's mean loss."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    n = Z.shape[0]
    model.train()
    last = math.nan
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator, device=Z.device)
        total = 0.0
        for start in range(0, n, batch_size):
            batch = Z.index_select(0, order[start : start + batch_size])  # (B, D)
            recon, mu, logvar = model(batch, generator=generator)
            loss = VAE.loss(batch, recon, mu, logvar, beta)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * batch.shape[0]
        last = total / n
    return last


def vae_checkpoint(model: VAE) -> dict:
    """A self-describing checkpoint: the weights and the config that rebuilds the model."""
    return {"config": asdict(model.config), "state_dict": model.state_dict()}
