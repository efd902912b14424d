"""The AASIST architecture (Jung et al., ICASSP 2022), written for spoofwatch.

Parameter names match the official state dicts so they load with a strict
``load_state_dict``. Two quirks of the official model are kept on purpose,
because the published weights were trained with them:

* The official ``ResidualBlock`` computes ``bn1``/``selu`` and then ignores
  the result: ``conv1`` reads the block input. Here that dead computation
  is skipped; ``bn1`` exists only so that the state dict loads strictly.
* The first heterogeneous layer of each branch reads the *unexpanded* master
  node parameter; broadcasting makes that equivalent for any batch size.

Shapes below are for AASIST-L on one 64,600-sample window; ``B`` is the batch.
"""

from __future__ import annotations

import math
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spoofwatch.constants import SAMPLE_RATE_HZ

from .config import ModelConfig

#: FFT size whose bin frequencies define the mel-spaced sinc band edges.
_SINC_NFFT = 512


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def sinc_filterbank(n_filters: int, kernel_size: int, sample_rate_hz: int) -> Tensor:
    """Fixed band-pass sinc filters with mel-spaced edges, Hamming windowed.

    Returns ``(n_filters, 1, kernel_size)`` float32, ready for ``conv1d``.
    The precision of each step follows the official implementation, which
    evaluates the sinc argument and the sinc itself in float32 and the
    band-edge gains in float64. Doing it all in float64 moves the filter taps
    by ~1e-7 and the AASIST-L logits by ~5e-5; this way the taps are
    bit-identical to the official ones.
    """
    freqs = (sample_rate_hz // 2) * np.linspace(0.0, 1.0, _SINC_NFFT // 2 + 1)
    mel = _hz_to_mel(freqs)
    edges_hz = _mel_to_hz(np.linspace(mel.min(), mel.max(), n_filters + 1))
    half = (kernel_size - 1) / 2
    taps = np.arange(-half, half + 1, dtype=np.float32)
    window = np.hamming(kernel_size).astype(np.float32)

    def lowpass(cutoff_hz: float) -> np.ndarray:
        # Ideal low-pass impulse response with cutoff `cutoff_hz`.
        arg = (np.float32(2 * cutoff_hz) * taps) / np.float32(sample_rate_hz)
        gain = np.float64(2 * cutoff_hz / sample_rate_hz)  # float64 scalar: promotes
        response: np.ndarray = gain * np.sinc(arg)
        return response

    bank = np.empty((n_filters, kernel_size), dtype=np.float32)
    for i in range(n_filters):
        band = lowpass(float(edges_hz[i + 1])) - lowpass(float(edges_hz[i]))
        bank[i] = window * band.astype(np.float32)
    return torch.from_numpy(bank).unsqueeze(1)


class SincFrontEnd(nn.Module):
    """Fixed sinc filterbank on the raw waveform (no learnable parameters)."""

    def __init__(self, n_filters: int, first_conv: int) -> None:
        super().__init__()
        # The official code forces an odd, symmetric kernel: 128 -> 129 taps.
        kernel_size = first_conv + 1 if first_conv % 2 == 0 else first_conv
        # Not persistent: the official state dict has no entry for it.
        self.register_buffer(
            "filters", sinc_filterbank(n_filters, kernel_size, SAMPLE_RATE_HZ), persistent=False
        )

    def forward(self, x: Tensor, band_mask: tuple[int, int] | None = None) -> Tensor:
        # x: (B, 1, T) -> (B, F, T - K + 1); for AASIST-L (B, 70, 64472)
        filters = self.get_buffer("filters")
        if band_mask is not None:
            # Frequency masking augmentation: zero `width` filters from `start`.
            start, width = band_mask
            filters = filters.clone()
            filters[start : start + width] = 0.0
        return F.conv1d(x, filters)


class ResidualBlock(nn.Module):
    """2-D residual block of the encoder, followed by (1, 3) max pooling."""

    def __init__(self, in_channels: int, out_channels: int, first: bool = False) -> None:
        super().__init__()
        self.first = first
        if not first:
            # Present in the official weights; its output is unused (see module doc).
            self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=(2, 3), padding=(1, 1))
        self.selu = nn.SELU()
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=(2, 3), padding=(0, 1))
        self.downsample = in_channels != out_channels
        if self.downsample:
            self.conv_downsample = nn.Conv2d(in_channels, out_channels, kernel_size=(1, 3), padding=(0, 1))
        self.mp = nn.MaxPool2d((1, 3))

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, C_in, S, T) -> (B, C_out, S, T // 3)
        return cast(Tensor, self.mp(self.pre_pool(x)))

    def pre_pool(self, x: Tensor) -> Tensor:
        """The block before its max pooling (the incremental encoder pools slices of it)."""
        # x: (B, C_in, S, T) -> (B, C_out, S, T)
        out = self.conv1(x)  # (B, C_out, S + 1, T)
        out = self.selu(self.bn2(out))
        out = self.conv2(out)  # (B, C_out, S, T)
        identity = self.conv_downsample(x) if self.downsample else x
        return cast(Tensor, out + identity)


def _pairwise_products(x: Tensor) -> Tensor:
    # x: (B, N, D) -> (B, N, N, D) with [b, i, j] = x[b, i] * x[b, j]
    return x.unsqueeze(2) * x.unsqueeze(1)


def _batch_norm_nodes(bn: nn.BatchNorm1d, x: Tensor) -> Tensor:
    # BatchNorm over the feature axis with nodes folded into the batch.
    batch, nodes, dim = x.shape
    return cast(Tensor, bn(x.reshape(-1, dim))).reshape(batch, nodes, dim)


def _xavier_parameter(rows: int, cols: int) -> nn.Parameter:
    weight = torch.empty(rows, cols)
    nn.init.xavier_normal_(weight)
    return nn.Parameter(weight)


class GraphAttentionLayer(nn.Module):
    """Graph attention over a fully connected graph of nodes."""

    def __init__(self, in_dim: int, out_dim: int, temperature: float) -> None:
        super().__init__()
        self.att_proj = nn.Linear(in_dim, out_dim)
        self.att_weight = _xavier_parameter(out_dim, 1)
        self.proj_with_att = nn.Linear(in_dim, out_dim)
        self.proj_without_att = nn.Linear(in_dim, out_dim)
        self.bn = nn.BatchNorm1d(out_dim)
        self.input_drop = nn.Dropout(p=0.2)
        self.act = nn.SELU()
        self.temperature = temperature

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, N, D_in) -> (B, N, D_out)
        x = self.input_drop(x)
        scores = torch.tanh(self.att_proj(_pairwise_products(x)))  # (B, N, N, D_out)
        scores = torch.matmul(scores, self.att_weight) / self.temperature  # (B, N, N, 1)
        att = F.softmax(scores, dim=-2).squeeze(-1)  # (B, N, N)
        out = self.proj_with_att(torch.matmul(att, x)) + self.proj_without_att(x)
        return cast(Tensor, self.act(_batch_norm_nodes(self.bn, out)))


class HeteroGraphAttentionLayer(nn.Module):
    """Heterogeneous graph attention over two node types plus a master node."""

    def __init__(self, in_dim: int, out_dim: int, temperature: float) -> None:
        super().__init__()
        self.proj_type1 = nn.Linear(in_dim, in_dim)
        self.proj_type2 = nn.Linear(in_dim, in_dim)
        self.att_proj = nn.Linear(in_dim, out_dim)
        self.att_projM = nn.Linear(in_dim, out_dim)
        self.att_weight11 = _xavier_parameter(out_dim, 1)
        self.att_weight22 = _xavier_parameter(out_dim, 1)
        self.att_weight12 = _xavier_parameter(out_dim, 1)
        self.att_weightM = _xavier_parameter(out_dim, 1)
        self.proj_with_att = nn.Linear(in_dim, out_dim)
        self.proj_without_att = nn.Linear(in_dim, out_dim)
        self.proj_with_attM = nn.Linear(in_dim, out_dim)
        self.proj_without_attM = nn.Linear(in_dim, out_dim)
        self.bn = nn.BatchNorm1d(out_dim)
        self.input_drop = nn.Dropout(p=0.2)
        self.act = nn.SELU()
        self.temperature = temperature

    def forward(self, x1: Tensor, x2: Tensor, master: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # x1: (B, N1, D_in), x2: (B, N2, D_in), master: (B|1, 1, D_in)
        # -> (B, N1, D_out), (B, N2, D_out), (B, 1, D_out)
        n1 = x1.shape[1]
        x = torch.cat([self.proj_type1(x1), self.proj_type2(x2)], dim=1)  # (B, N, D_in)
        x = self.input_drop(x)
        att = self._node_attention(x, n1)  # (B, N, N)
        master = self._update_master(x, master)  # (B, 1, D_out)
        out = self.proj_with_att(torch.matmul(att, x)) + self.proj_without_att(x)
        out = self.act(_batch_norm_nodes(self.bn, out))
        return out[:, :n1], out[:, n1:], master

    def _node_attention(self, x: Tensor, n1: int) -> Tensor:
        # x: (B, N, D) -> attention (B, N, N), one weight vector per edge type.
        hidden = torch.tanh(self.att_proj(_pairwise_products(x)))  # (B, N, N, D_out)
        s11 = torch.matmul(hidden, self.att_weight11).squeeze(-1)  # (B, N, N)
        s22 = torch.matmul(hidden, self.att_weight22).squeeze(-1)
        s12 = torch.matmul(hidden, self.att_weight12).squeeze(-1)
        is_type1 = torch.arange(x.shape[1], device=x.device) < n1  # (N,)
        both1 = is_type1.unsqueeze(1) & is_type1.unsqueeze(0)  # (N, N)
        both2 = ~is_type1.unsqueeze(1) & ~is_type1.unsqueeze(0)
        # Edges between the two types share att_weight12, in both directions.
        scores = torch.where(both1, s11, torch.where(both2, s22, s12))
        return F.softmax(scores / self.temperature, dim=-2)

    def _update_master(self, x: Tensor, master: Tensor) -> Tensor:
        # x: (B, N, D_in), master: (B|1, 1, D_in) -> (B, 1, D_out)
        hidden = torch.tanh(self.att_projM(x * master))  # (B, N, D_out)
        scores = torch.matmul(hidden, self.att_weightM) / self.temperature  # (B, N, 1)
        att = F.softmax(scores, dim=-2)  # over nodes
        pooled = torch.matmul(att.transpose(1, 2), x)  # (B, 1, D_in)
        return cast(Tensor, self.proj_with_attM(pooled) + self.proj_without_attM(master))


class GraphPool(nn.Module):
    """Keeps the top ``ratio`` of nodes by a learned sigmoid score."""

    def __init__(self, ratio: float, in_dim: int, dropout: float) -> None:
        super().__init__()
        self.ratio = ratio
        self.sigmoid = nn.Sigmoid()
        self.proj = nn.Linear(in_dim, 1)
        self.drop = nn.Dropout(p=dropout)

    def keep(self, n_nodes: int) -> int:
        """How many of ``n_nodes`` nodes survive."""
        return max(int(n_nodes * self.ratio), 1)

    def forward(self, h: Tensor) -> Tensor:
        # h: (B, N, D) -> (B, keep(N), D)
        dim = h.shape[2]
        scores = self.sigmoid(self.proj(self.drop(h)))  # (B, N, 1)
        _, idx = torch.topk(scores, self.keep(h.shape[1]), dim=1)  # (B, keep, 1)
        return torch.gather(h * scores, 1, idx.expand(-1, -1, dim))

    def tie_gap(self, h: Tensor) -> Tensor:
        """(B,) smallest relative gap between neighbouring scores among the kept
        nodes and the first dropped one (inf: a single node, nothing to order).

        A gap of a few float32 rounding steps is a tie, and top-k leaves the
        order of tied nodes to its implementation: at the cut it decides which
        node survives, among the kept ones their order, which matters because
        the model pairs the two branches' nodes by position. Two correct
        runtimes may then differ (a saturated sigmoid gives many exact 1.0 scores).
        """
        keep = self.keep(h.shape[1])
        scores = self.sigmoid(self.proj(h))[..., 0]  # (B, N); dropout is off in eval
        ranked = torch.sort(scores, dim=1, descending=True).values[:, : keep + 1]  # (B, <= keep + 1)
        if ranked.shape[1] < 2:
            return torch.full((h.shape[0],), math.inf)
        higher = ranked[:, :-1]
        gaps = (higher - ranked[:, 1:]) / higher.clamp_min(torch.finfo(scores.dtype).tiny)
        return gaps.min(dim=1).values


class AASIST(nn.Module):
    """AASIST / AASIST-L spoofing countermeasure on raw 16 kHz waveforms.

    ``forward`` maps ``(B, 64600)`` float32 waveforms to ``(B, 2)`` logits
    ``[spoof, bonafide]``; column 1 is the score.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        filts = config.filts
        gat0, gat1 = config.gat_dims
        enc_out = filts[-1][1]
        self.conv_time = SincFrontEnd(config.sinc_channels, config.first_conv)
        self.first_bn = nn.BatchNorm2d(1)
        self.drop = nn.Dropout(0.5)
        self.drop_way = nn.Dropout(0.2)
        self.selu = nn.SELU()
        stages = [filts[0], filts[1], filts[2], filts[3], filts[3], filts[3]]
        self.encoder = nn.Sequential(
            *(
                nn.Sequential(ResidualBlock(c_in, c_out, first=i == 0))
                for i, (c_in, c_out) in enumerate(stages)
            )
        )
        # One positional embedding per spectral node: 70 sinc bands // 3 = 23.
        n_spectral = config.sinc_channels // 3
        self.pos_S = nn.Parameter(torch.randn(1, n_spectral, enc_out))
        self.master1 = nn.Parameter(torch.randn(1, 1, gat0))
        self.master2 = nn.Parameter(torch.randn(1, 1, gat0))
        t = config.temperatures
        self.GAT_layer_S = GraphAttentionLayer(enc_out, gat0, t[0])
        self.GAT_layer_T = GraphAttentionLayer(enc_out, gat0, t[1])
        self.HtrgGAT_layer_ST11 = HeteroGraphAttentionLayer(gat0, gat1, t[2])
        self.HtrgGAT_layer_ST12 = HeteroGraphAttentionLayer(gat1, gat1, t[2])
        self.HtrgGAT_layer_ST21 = HeteroGraphAttentionLayer(gat0, gat1, t[2])
        self.HtrgGAT_layer_ST22 = HeteroGraphAttentionLayer(gat1, gat1, t[2])
        r = config.pool_ratios
        self.pool_S = GraphPool(r[0], gat0, 0.3)
        self.pool_T = GraphPool(r[1], gat0, 0.3)
        self.pool_hS1 = GraphPool(r[2], gat1, 0.3)
        self.pool_hT1 = GraphPool(r[2], gat1, 0.3)
        self.pool_hS2 = GraphPool(r[2], gat1, 0.3)
        self.pool_hT2 = GraphPool(r[2], gat1, 0.3)
        self.out_layer = nn.Linear(5 * gat1, 2)

    def forward(self, waveform: Tensor) -> Tensor:
        """``(B, 64600)`` -> logits ``(B, 2)`` = ``[spoof, bonafide]``."""
        return self.forward_with_embedding(waveform)[1]

    def forward_with_embedding(
        self, waveform: Tensor, band_mask: tuple[int, int] | None = None
    ) -> tuple[Tensor, Tensor]:
        """Return ``(embedding (B, 5 * gat_dims[1]), logits (B, 2))``."""
        e = self.encoder(self.front_end(waveform, band_mask))  # (B, 24, 23, 29)
        return self.classify(e)

    def front_end(self, waveform: Tensor, band_mask: tuple[int, int] | None = None) -> Tensor:
        """Sinc filterbank, |.|, (3, 3) max pooling, BN, SELU: the encoder input."""
        # waveform: (B, T) -> (B, 1, 23, (T - 128) // 3); (B, 1, 23, 21490) for one window
        x = self.conv_time(waveform.unsqueeze(1), band_mask)  # (B, 70, 64472)
        x = F.max_pool2d(torch.abs(x.unsqueeze(1)), (3, 3))  # (B, 1, 23, 21490)
        return cast(Tensor, self.selu(self.first_bn(x)))

    def classify(self, e: Tensor) -> tuple[Tensor, Tensor]:
        """Graph back end on the encoder output: ``(embedding, logits)``."""
        # e: (B, 24, 23, 29) -> (B, 160), (B, 2)
        # Spectral graph: one node per sub-band, max over time.
        e_s = torch.amax(torch.abs(e), dim=3).transpose(1, 2) + self.pos_S  # (B, 23, 24)
        out_s = self.pool_S(self.GAT_layer_S(e_s))  # (B, 9, 24)
        # Temporal graph: one node per frame, max over frequency.
        e_t = torch.amax(torch.abs(e), dim=2).transpose(1, 2)  # (B, 29, 24)
        out_t = self.pool_T(self.GAT_layer_T(e_t))  # (B, 14, 24)

        t1, s1, m1 = self._branch(
            out_t,
            out_s,
            self.master1,
            self.HtrgGAT_layer_ST11,
            self.HtrgGAT_layer_ST12,
            self.pool_hT1,
            self.pool_hS1,
        )  # (B, 9, 32), (B, 6, 32), (B, 1, 32)
        t2, s2, m2 = self._branch(
            out_t,
            out_s,
            self.master2,
            self.HtrgGAT_layer_ST21,
            self.HtrgGAT_layer_ST22,
            self.pool_hT2,
            self.pool_hS2,
        )
        out_t = torch.maximum(self.drop_way(t1), self.drop_way(t2))
        out_s = torch.maximum(self.drop_way(s1), self.drop_way(s2))
        master = torch.maximum(self.drop_way(m1), self.drop_way(m2))

        hidden = torch.cat(
            [
                torch.amax(torch.abs(out_t), dim=1),  # (B, 32)
                torch.mean(out_t, dim=1),
                torch.amax(torch.abs(out_s), dim=1),
                torch.mean(out_s, dim=1),
                master.squeeze(1),
            ],
            dim=1,
        )  # (B, 160)
        return hidden, self.out_layer(self.drop(hidden))

    @staticmethod
    def _branch(
        out_t: Tensor,
        out_s: Tensor,
        master: Tensor,
        first: HeteroGraphAttentionLayer,
        second: HeteroGraphAttentionLayer,
        pool_t: GraphPool,
        pool_s: GraphPool,
    ) -> tuple[Tensor, Tensor, Tensor]:
        # Two heterogeneous layers with a residual second pass.
        t, s, m = first(out_t, out_s, master)
        t, s = pool_t(t), pool_s(s)
        t_aug, s_aug, m_aug = second(t, s, m)
        return t + t_aug, s + s_aug, m + m_aug


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(math.prod(p.shape) for p in model.parameters())
