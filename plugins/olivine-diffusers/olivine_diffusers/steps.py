"""One training loss of each variant (Olive's formulas), and a fixed-noise loss to compare runs."""

from __future__ import annotations

from typing import Any

from olivine_diffusers.components import Components, encode_flux, encode_sd, encode_sdxl
from olivine_diffusers.config import SDLoRAConfig

#: the seed of the noise and timesteps of :meth:`DenoiseStep.fixed_loss`
PROBE_SEED = 1234


class DenoiseStep:
    """The denoising loss of a batch for SD 1.5 / SDXL (noise or v targets) or Flux (flow
    matching), with Olive's Min-SNR weighting and prior-preservation split."""

    def __init__(self, parts: Components, variant: str, config: SDLoRAConfig, dtype: Any,
                 device: Any) -> None:
        self.parts = parts
        self.variant = variant
        self.config = config
        self.args = config.args()
        self.dtype = dtype
        self.device = device

    def _latents(self, pixels: Any) -> Any:
        vae = self.parts.vae
        latents = vae.encode(pixels.to(self.device, dtype=self.dtype)).latent_dist.sample()
        if self.variant == "flux":
            return (latents - vae.config.shift_factor) * vae.config.scaling_factor
        return latents * vae.config.scaling_factor

    def loss(self, batch: dict[str, Any], generator: Any = None, prior: bool | None = None) -> Any:
        """The training loss of ``batch`` (noise and timesteps from ``generator`` when given).

        ``prior``: the batch's second half are class images (default: with_prior_preservation).
        """
        import torch

        prior = self.config.with_prior_preservation if prior is None else prior

        with torch.no_grad():
            latents = self._latents(batch["pixel_values"])
        if self.variant == "flux":
            pred, target = self._flux(batch, latents, generator)
        else:
            pred, target, timesteps = self._unet(batch, latents, generator)
        pred, target = pred.float(), target.float()
        if prior:
            pred, pred_prior = torch.chunk(pred, 2, dim=0)
            target, target_prior = torch.chunk(target, 2, dim=0)
            if self.variant != "flux":
                timesteps = timesteps[: len(timesteps) // 2]
        if self.variant != "flux" and self.args.snr_gamma is not None:
            loss = self._snr_weighted(pred, target, timesteps)
        else:
            loss = torch.nn.functional.mse_loss(pred, target, reduction="mean")
        if prior:
            prior_loss = torch.nn.functional.mse_loss(pred_prior, target_prior, reduction="mean")
            loss = loss + self.config.prior_loss_weight * prior_loss
        return loss

    def _snr_weighted(self, pred: Any, target: Any, timesteps: Any) -> Any:
        import torch
        from diffusers.training_utils import compute_snr

        scheduler = self.parts.scheduler
        snr = compute_snr(scheduler, timesteps)
        gamma = float(self.args.snr_gamma or 0.0)
        weights = torch.stack([snr, torch.full_like(snr, gamma)], dim=1).min(dim=1)[0]
        if scheduler.config.prediction_type == "v_prediction":
            weights = weights + 1
        weights = weights / snr
        loss = torch.nn.functional.mse_loss(pred, target, reduction="none")
        return (loss.mean(dim=list(range(1, loss.ndim))) * weights).mean()

    def _unet(self, batch: dict[str, Any], latents: Any, generator: Any) -> tuple[Any, Any, Any]:
        import torch

        scheduler = self.parts.scheduler
        steps = scheduler.config.num_train_timesteps
        if generator is None:  # Olive's draws: in the latents' dtype, on their device
            noise = torch.randn_like(latents)
            timesteps = torch.randint(0, steps, (latents.shape[0],), device=latents.device).long()
        else:
            noise = torch.randn(latents.shape, generator=generator, device="cpu").to(latents)
            timesteps = torch.randint(0, steps, (latents.shape[0],), generator=generator,
                                      device="cpu").long().to(self.device)
        noisy = scheduler.add_noise(latents, noise, timesteps).to(self.dtype)
        with torch.no_grad():
            if self.variant == "sdxl":
                hidden, pooled = encode_sdxl(self.parts, batch["captions"], self.device)
                time_ids = torch.tensor(
                    [list(o) + list(c) + list(t) for o, c, t in
                     zip(batch["original_sizes"], batch["crops"], batch["target_sizes"])],
                    dtype=self.dtype, device=self.device)
                extra = {"added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids}}
            else:
                hidden, extra = encode_sd(self.parts, batch["captions"], self.device), {}
        pred = self.parts.denoiser(noisy, timesteps, hidden.to(self.dtype), return_dict=False,
                                   **extra)[0]
        kind = scheduler.config.prediction_type
        if kind == "epsilon":
            target = noise
        elif kind == "v_prediction":
            target = scheduler.get_velocity(latents, noise, timesteps)
        else:
            from olivine import UsageError

            raise UsageError(f"the scheduler's prediction_type {kind!r} is not trained here "
                             "(epsilon or v_prediction)")
        return pred, target, timesteps

    def _flux(self, batch: dict[str, Any], latents: Any, generator: Any) -> tuple[Any, Any]:
        import torch

        b, c, h, w = latents.shape
        packed = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
        packed = packed.reshape(b, (h // 2) * (w // 2), c * 4)
        if generator is None:  # Olive's draws: in the latents' dtype, on their device
            noise = torch.randn_like(packed)
            u = torch.rand(b, device=packed.device, dtype=self.dtype)
        else:
            noise = torch.randn(packed.shape, generator=generator, device="cpu").to(packed)
            u = torch.rand(b, generator=generator, device="cpu").to(self.device, dtype=self.dtype)
        timesteps = u * 1000
        sigmas = (timesteps / 1000.0).to(packed.dtype).view(b, 1, 1)
        noisy = sigmas * noise + (1.0 - sigmas) * packed
        with torch.no_grad():
            embeds, pooled, text_ids = encode_flux(self.parts, batch["captions"], self.device)
        img_ids = torch.zeros(h // 2, w // 2, 3, device=self.device, dtype=self.dtype)
        img_ids[..., 1] = torch.arange(h // 2, device=self.device, dtype=self.dtype)[:, None]
        img_ids[..., 2] = torch.arange(w // 2, device=self.device, dtype=self.dtype)[None, :]
        guidance = None
        if getattr(self.parts.denoiser.config, "guidance_embeds", False):
            guidance = torch.full((b,), self.args.guidance_scale, device=self.device,
                                  dtype=self.dtype)
        pred = self.parts.denoiser(hidden_states=noisy.to(self.dtype), timestep=timesteps / 1000,
                                   guidance=guidance, pooled_projections=pooled,
                                   encoder_hidden_states=embeds, txt_ids=text_ids,
                                   img_ids=img_ids.reshape(-1, 3), return_dict=False)[0]
        return pred, noise - packed

    def fixed_loss(self, batches: list[dict[str, Any]]) -> float | None:
        """The mean loss over ``batches`` with the same noise, timesteps and VAE samples each
        call: a before/after comparison of the denoiser (dropout off)."""
        import torch

        if not batches:
            return None
        training = self.parts.denoiser.training
        self.parts.denoiser.eval()
        total = 0.0
        state = torch.get_rng_state()
        try:
            with torch.no_grad(), torch.autocast(self.device.type, dtype=self.dtype,
                                                 enabled=self.dtype != torch.float32):
                for i, batch in enumerate(batches):
                    torch.manual_seed(PROBE_SEED + i)
                    gen = torch.Generator().manual_seed(PROBE_SEED + i)
                    total += float(self.loss(batch, gen, prior=False))
        finally:
            torch.set_rng_state(state)
            self.parts.denoiser.train(training)
        return total / len(batches)
