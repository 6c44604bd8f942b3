package main

import (
	"fmt"
	"slices"
)

// roundValues returns the samples of group/path in unit, one per round:
// scripts/bench.sh runs every benchmark once per round, so the i-th
// sample of two paths of one benchmark come from the same round.
func roundValues(res *results, group, path, unit string) []float64 {
	return res.get(group, path, unit)
}

// roundRatios returns, per round, path's value over base's, or nil when
// either has no sample or their counts differ (then rounds cannot be
// paired).
func roundRatios(res *results, group, path, base, unit string) []float64 {
	return pairRatios(roundValues(res, group, path, unit), roundValues(res, group, base, unit))
}

// pairRatios divides xs by ys element by element; nil when the lengths
// differ, either is empty or a divisor is not positive.
func pairRatios(xs, ys []float64) []float64 {
	if len(xs) == 0 || len(xs) != len(ys) {
		return nil
	}
	out := make([]float64, len(xs))
	for i := range xs {
		if ys[i] <= 0 {
			return nil
		}
		out[i] = xs[i] / ys[i]
	}
	return out
}

// sumRounds adds the samples of several units of one benchmark, round by
// round; nil when their counts differ.
func sumRounds(res *results, group, path string, units ...string) []float64 {
	var out []float64
	for i, u := range units {
		xs := res.get(group, path, u)
		if i == 0 {
			out = slices.Clone(xs)
			continue
		}
		if len(xs) != len(out) {
			return nil
		}
		for j := range xs {
			out[j] += xs[j]
		}
	}
	return out
}

// outcome is how a target fared.
type outcome int

const (
	notMeasured outcome = iota
	met
	// withinNoise: the rounds fall on both sides of the bound.
	withinNoise
	missed
)

func (o outcome) String() string {
	switch o {
	case met:
		return "met"
	case withinNoise:
		return "within noise"
	case missed:
		return "**not met**"
	}
	return "—"
}

// worse returns the worse of two outcomes (a measured one beats
// notMeasured only when the other is measured too).
func worse(a, b outcome) outcome {
	if a == notMeasured || b == notMeasured {
		return notMeasured
	}
	return max(a, b)
}

// judge decides a bound on values (one per round): met when every round
// is on the right side, missed when none is, within noise otherwise.
func judge(values []float64, bound float64, atMost bool) outcome {
	if len(values) == 0 {
		return notMeasured
	}
	ok := 0
	for _, v := range values {
		if (atMost && v <= bound) || (!atMost && v >= bound) {
			ok++
		}
	}
	switch ok {
	case len(values):
		return met
	case 0:
		return missed
	}
	return withinNoise
}

// rangeNote is " (lo–hi over n rounds)" for more than one round, else "".
func rangeNote(values []float64, decimals int) string {
	if len(values) < 2 {
		return ""
	}
	return fmt.Sprintf(" (%s–%s over %d rounds)", num(slices.Min(values), decimals), num(slices.Max(values), decimals), len(values))
}

// ratioCell is a ratio of medians with its range over rounds, such as
// "1.13× (1.05–1.20)", or "—".
func ratioCell(med float64, rounds []float64) string {
	if med <= 0 {
		return "—"
	}
	s := fmt.Sprintf("%.2f×", med)
	if len(rounds) > 1 {
		s += fmt.Sprintf(" (%.2f–%.2f)", slices.Min(rounds), slices.Max(rounds))
	}
	return s
}
