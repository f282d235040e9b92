"""Diffusion schedules vs the official values (fixtures/official_mar §2.5) and the spec check values."""
from pathlib import Path

import numpy as np
import pytest

from gtr.plan import COEF_NAMES, cosine_betas, respace_timesteps, spaced_schedule, step_table

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "official_mar"
IO = FIXTURES / "mar_small_io.npz"

SCHED_FIELDS = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "posterior_variance",
                "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
                "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod")


@pytest.fixture(scope="module")
def io():
    with np.load(IO, allow_pickle=False) as f:
        return {k: f[k] for k in f.files if k.startswith(("sched_", "ps", "in_ps", "out_ps"))}


def _ints(text):
    return [int(x) for x in text.split(",")]


# ---- against the official objects

def test_base_betas_match_official(io):
    np.testing.assert_allclose(cosine_betas(1000), io["sched_1000_betas"], rtol=1e-12, atol=0)


@pytest.mark.parametrize("R", [100, 50, 25, 20, 250])
def test_spaced_schedule_matches_official(io, R):
    s = spaced_schedule(R)
    assert s.T == R
    assert s.timesteps.dtype == np.int64
    np.testing.assert_array_equal(s.timesteps, io[f"sched_{R}_timestep_map"])
    for name in SCHED_FIELDS:
        np.testing.assert_allclose(getattr(s, name), io[f"sched_{R}_{name}"], rtol=1e-12, atol=0,
                                   err_msg=name)
    np.testing.assert_allclose(s.log_betas, np.log(io[f"sched_{R}_betas"]), rtol=1e-12, atol=0)


@pytest.mark.parametrize("R", [100, 50])
def test_step_table_reproduces_official_p_sample(io, R):
    """The float32 table columns, used as the head step uses them, give the official step outputs."""
    table = step_table(R)
    X = f"ps{R}"
    for j, k in enumerate(io[f"{X}_indices"]):
        r1, r2, c1, c2, log_beta, log_post = table[k]
        x, out = io[f"in_{X}_x"][j], io[f"out_{X}_model_out"][j]
        eps, v = out[:, :16], out[:, 16:]
        frac = (v + np.float32(1)) / np.float32(2)
        log_var = frac * log_beta + (np.float32(1) - frac) * log_post
        pred = r1 * x - r2 * eps
        mean = c1 * pred + c2 * x
        for got, key in ((pred, "pred_xstart"), (mean, "mean"), (log_var, "log_variance")):
            ref = io[f"out_{X}_{key}"][j]
            rel = np.abs(got - ref).max() / np.abs(ref).max()
            assert rel < 1e-5, (R, k, key, rel)
    assert table.dtype == np.float32 and table.shape == (R, len(COEF_NAMES))


# ---- spec check values (mar-spec §7, gtr-spec §4.4)

def test_base_betas_check_values():
    b = cosine_betas()
    np.testing.assert_allclose(b[[0, 1, 998]], [4.1284224822e-05, 4.6141752737e-05, 0.74999939], rtol=1e-8)
    assert b[999] == 0.999 and (b[:999] < 0.999).all()  # only the last value is clipped
    np.testing.assert_allclose(np.cumprod(1 - b)[999], 2.4287669070e-09, rtol=1e-9)


@pytest.mark.parametrize("T,k,t", [(21, 10, 499), (23, 11, 499), (27, 13, 499), (31, 15, 500), (43, 21, 499),
                                   (43, 35, 833), (45, 22, 499), (25, 4, 166), (25, 20, 832)])
def test_respacing_accumulation_and_half_even(T, k, t):
    assert respace_timesteps(T)[k] == t


def test_respacing_edges():
    np.testing.assert_array_equal(respace_timesteps(1), [0])
    np.testing.assert_array_equal(respace_timesteps(2), [0, 999])
    np.testing.assert_array_equal(respace_timesteps(1000), np.arange(1000))
    with pytest.raises(ValueError):
        respace_timesteps(0)
    with pytest.raises(ValueError):
        respace_timesteps(1001)


MAR_T100 = ("0,10,20,30,40,50,61,71,81,91,101,111,121,131,141,151,161,172,182,192,202,212,222,232,242,252,"
            "262,272,283,293,303,313,323,333,343,353,363,373,383,394,404,414,424,434,444,454,464,474,484,494,"
            "505,515,525,535,545,555,565,575,585,595,605,616,626,636,646,656,666,676,686,696,706,716,727,737,"
            "747,757,767,777,787,797,807,817,827,838,848,858,868,878,888,898,908,918,928,938,949,959,969,979,"
            "989,999")

# gtr-spec §4.4: every T of preset gtr.
GTR_MAPS = {
    50: "0,20,41,61,82,102,122,143,163,183,204,224,245,265,285,306,326,347,367,387,408,428,449,469,489,510,"
        "530,550,571,591,612,632,652,673,693,714,734,754,775,795,816,836,856,877,897,917,938,958,979,999",
    48: "0,21,43,64,85,106,128,149,170,191,213,234,255,276,298,319,340,361,383,404,425,446,468,489,510,531,"
        "553,574,595,616,638,659,680,701,723,744,765,786,808,829,850,871,893,914,935,956,978,999",
    45: "0,23,45,68,91,114,136,159,182,204,227,250,272,295,318,341,363,386,409,431,454,477,499,522,545,568,"
        "590,613,636,658,681,704,727,749,772,795,817,840,863,885,908,931,954,976,999",
    43: "0,24,48,71,95,119,143,166,190,214,238,262,285,309,333,357,381,404,428,452,476,499,523,547,571,595,"
        "618,642,666,690,714,737,761,785,809,833,856,880,904,928,951,975,999",
    41: "0,25,50,75,100,125,150,175,200,225,250,275,300,325,350,375,400,425,450,475,500,524,549,574,599,624,"
        "649,674,699,724,749,774,799,824,849,874,899,924,949,974,999",
    38: "0,27,54,81,108,135,162,189,216,243,270,297,324,351,378,405,432,459,486,513,540,567,594,621,648,675,"
        "702,729,756,783,810,837,864,891,918,945,972,999",
    36: "0,29,57,86,114,143,171,200,228,257,285,314,343,371,400,428,457,485,514,542,571,599,628,656,685,714,"
        "742,771,799,828,856,885,913,942,970,999",
    34: "0,30,61,91,121,151,182,212,242,272,303,333,363,394,424,454,484,515,545,575,605,636,666,696,727,757,"
        "787,817,848,878,908,938,969,999",
    32: "0,32,64,97,129,161,193,226,258,290,322,354,387,419,451,483,516,548,580,612,645,677,709,741,773,806,"
        "838,870,902,935,967,999",
    29: "0,36,71,107,143,178,214,250,285,321,357,392,428,464,500,535,571,607,642,678,714,749,785,821,856,892,"
        "928,963,999",
    27: "0,38,77,115,154,192,231,269,307,346,384,423,461,499,538,576,615,653,692,730,768,807,845,884,922,961,"
        "999",
    25: "0,42,83,125,166,208,250,291,333,375,416,458,500,541,583,624,666,708,749,791,832,874,916,957,999",
    22: "0,48,95,143,190,238,285,333,381,428,476,523,571,618,666,714,761,809,856,904,951,999",
    20: "0,53,105,158,210,263,315,368,421,473,526,578,631,684,736,789,841,894,946,999",
}


@pytest.mark.parametrize("T", sorted(GTR_MAPS))
def test_gtr_respaced_maps(T):
    assert len(_ints(GTR_MAPS[T])) == T
    np.testing.assert_array_equal(respace_timesteps(T), _ints(GTR_MAPS[T]))


def test_mar_t100_map():
    np.testing.assert_array_equal(respace_timesteps(100), _ints(MAR_T100))


def test_spaced_check_values_t100():
    s = spaced_schedule(100)
    np.testing.assert_allclose(s.betas[:3], [4.1284224822e-05, 6.7984006851e-04, 1.1655155529e-03], rtol=1e-9)
    np.testing.assert_allclose(s.betas[-3:], [0.5553756194, 0.7499392804, 0.9999899992], rtol=1e-9)
    np.testing.assert_allclose(s.posterior_log_variance_clipped[:3],
                               [-10.15394511, -10.15394511, -7.71591137], rtol=1e-8)
    np.testing.assert_allclose(s.posterior_log_variance_clipped[99], -2.5289e-4, rtol=1e-4)
    np.testing.assert_allclose(s.log_betas[0], -10.09503010, rtol=1e-9)
    np.testing.assert_allclose(s.sqrt_recipm1_alphas_cumprod[[0, 99]], [0.0064254128, 20291.1696], rtol=1e-8)
    assert s.posterior_mean_coef1[0] == pytest.approx(1, rel=1e-12) and s.posterior_mean_coef2[0] == 0
    np.testing.assert_allclose([s.posterior_mean_coef1[99], s.posterior_mean_coef2[99]],
                               [0.0155837214, 0.0031616364], rtol=0, atol=6e-11)  # 10 printed decimals
    # Spaced cumulative products equal the base ones at the kept timesteps.
    base = np.cumprod(1 - cosine_betas())
    np.testing.assert_allclose(s.alphas_cumprod, base[s.timesteps], rtol=1e-10)


def test_spaced_check_values_t50_t20():
    s50, s20 = spaced_schedule(50), spaced_schedule(20)
    np.testing.assert_allclose(s50.betas[:3], [4.1284224822e-05, 1.8445632572e-03, 4.0260323118e-03], rtol=1e-9)
    np.testing.assert_allclose(s50.betas[-3:], [0.5474927827, 0.7617994918, 0.9999974992], rtol=1e-9)
    np.testing.assert_allclose(s50.posterior_log_variance_clipped[[0, 1, 2]],
                               [-10.1171245, -10.1171245, -6.6563029], rtol=1e-8)
    np.testing.assert_allclose(s20.betas[:3], [4.1284224822e-05, 9.1108321503e-03, 2.2128969902e-02], rtol=1e-9)
    np.testing.assert_allclose(s20.betas[-1], 0.9999996432, rtol=1e-9)
    np.testing.assert_allclose(s20.posterior_log_variance_clipped[[0, 2]], [-10.0995101, -5.03342996], rtol=1e-8)


def test_step_table_columns_and_caching():
    s = spaced_schedule(20)
    assert spaced_schedule(20) is s  # cached
    assert not s.betas.flags.writeable  # shared arrays are read-only
    t = step_table(20)
    assert t.flags.writeable
    for c, name in enumerate(COEF_NAMES):
        np.testing.assert_array_equal(t[:, c], getattr(s, name).astype(np.float32))


def test_single_step_schedule_is_finite():
    s = spaced_schedule(1)
    np.testing.assert_array_equal(s.timesteps, [0])
    assert np.isfinite(step_table(1)).all()
