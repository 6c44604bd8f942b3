package main

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// chartCap is the highest relative speed the chart's axis shows; taller
// bars are cut and labelled with their value.
const chartCap = 4.0

// chartBar is one bar: a path's speed relative to OpenSSH in one group.
type chartBar struct {
	slot   int     // 0 direct, 1 openssh, 2 pgrelay proxy, 3 pgrelay in-process / tunnel
	value  float64 // relative speed, OpenSSH = 1
	target float64 // the target as relative speed, 0 for none
}

// chartGroup is the bars of one benchmark.
type chartGroup struct {
	label string
	bars  []chartBar
}

// slotColors are the paths' colours, in slot order.
var slotColors = [4]color.RGBA{
	{0x9e, 0x9e, 0x9e, 0xff}, // direct: grey
	{0xf0, 0x8c, 0x28, 0xff}, // openssh: orange
	{0x2f, 0x6f, 0xd6, 0xff}, // pgrelay proxy: blue
	{0x2e, 0xa0, 0x4a, 0xff}, // pgrelay in-process / tunnel: green
}

var slotNames = [4]string{"direct", "OpenSSH ssh -L", "pgrelay proxy", "pgrelay in-process, tunnel or exec"}

// slotOf maps a path to its slot.
func slotOf(path string) int {
	switch path {
	case pathDirect:
		return 0
	case pathOpenSSH:
		return 1
	case pathProxy:
		return 2
	default: // pathInProcess, pathPgrelay, pathExec
		return 3
	}
}

// chartGroups turns the results into bars.
func chartGroups(res *results) []chartGroup {
	targetFor := func(group, path string) float64 {
		for _, t := range targets {
			if t.Group != group || t.Path != path || t.Absolute {
				continue
			}
			if t.AtMost {
				return 1 / t.Bound // a time at most Bound × OpenSSH's: speed at least 1/Bound
			}
			return t.Bound
		}
		return 0
	}
	var groups []chartGroup
	for _, s := range specs {
		base := median(res.get(s.Group, pathOpenSSH, s.Unit))
		if base <= 0 {
			continue
		}
		g := chartGroup{label: s.Short}
		for _, path := range s.Paths {
			if path == pathProxyBase {
				continue // in its own section
			}
			v := median(res.get(s.Group, path, s.Unit))
			if v <= 0 {
				continue
			}
			rel := base / v
			if s.Higher {
				rel = v / base
			}
			g.bars = append(g.bars, chartBar{slot: slotOf(path), value: rel, target: targetFor(s.Group, path)})
		}
		groups = append(groups, g)
	}
	// Real clients: rates, the proxy and exec against OpenSSH.
	chartLabels := map[string]string{
		"Clients/copy/small": "psql 100 B", "Clients/copy/medium": "psql 1 kB", "Clients/copy/large": "psql 1 MB",
		"Clients/pg_dump": "pg_dump", "Clients/pg_restore": "pg_restore",
	}
	for _, s := range clientSpecs {
		base := median(res.get(s.Group, pathOpenSSH, s.Unit))
		if base <= 0 {
			continue
		}
		g := chartGroup{label: chartLabels[s.Group]}
		for _, path := range []string{pathDirect, pathOpenSSH, pathProxy, pathExec} {
			if v := median(res.get(s.Group, path, s.Unit)); v > 0 {
				g.bars = append(g.bars, chartBar{slot: slotOf(path), value: v / base, target: targetFor(s.Group, path)})
			}
		}
		groups = append(groups, g)
	}
	// Time to the first row with the bastion 25 ms away.
	if fr, base := "Far/25ms/first_row", median(res.get("Far/25ms/first_row", pathOpenSSH, "first-row-ms")); base > 0 {
		g := chartGroup{label: "first row, far"}
		for _, path := range []string{pathDirect, pathOpenSSH, pathPgrelay} {
			if v := median(res.get(fr, path, "first-row-ms")); v > 0 {
				g.bars = append(g.bars, chartBar{slot: slotOf(path), value: base / v, target: targetFor(fr, path)})
			}
		}
		groups = append(groups, g)
	}
	// OpenSSH over pgrelay: lower is better for all of these.
	inverse := []struct{ label, group, unit string }{
		{"drop detection", "DropDetection", "ns/op"},
		{"tunnel open p50", "Scale", "open-p50-ns"},
		{"idle memory (PSS)", "Scale", "pss-MB"},
		{"idle CPU", "Scale", "idle-cpu-%"},
	}
	for _, in := range inverse {
		pg, ssh := median(res.get(in.group, pathPgrelay, in.unit)), median(res.get(in.group, pathOpenSSH, in.unit))
		if pg <= 0 || ssh <= 0 {
			continue
		}
		groups = append(groups, chartGroup{label: in.label, bars: []chartBar{
			{slot: 1, value: 1},
			{slot: 3, value: ssh / pg},
		}})
	}
	return groups
}

// renderChart draws the groups as a PNG bar chart.
func renderChart(groups []chartGroup, title string) ([]byte, error) {
	const (
		width, height = 1600, 640
		left, right   = 70, 20
		top, bottom   = 96, 90
	)
	img := image.NewRGBA(image.Rect(0, 0, width, height))
	draw.Draw(img, img.Bounds(), image.NewUniform(color.White), image.Point{}, draw.Src)
	black := color.RGBA{0x20, 0x20, 0x20, 0xff}
	grid := color.RGBA{0xe4, 0xe4, 0xe4, 0xff}
	face := basicfont.Face7x13

	text := func(x, y int, c color.Color, s string) {
		d := &font.Drawer{Dst: img, Src: image.NewUniform(c), Face: face, Dot: fixed.P(x, y)}
		d.DrawString(s)
	}
	textWidth := func(s string) int { return font.MeasureString(face, s).Round() }
	centered := func(cx, y int, c color.Color, s string) { text(cx-textWidth(s)/2, y, c, s) }
	rect := func(x0, y0, x1, y1 int, c color.Color) {
		draw.Draw(img, image.Rect(x0, y0, x1, y1), image.NewUniform(c), image.Point{}, draw.Src)
	}

	centered(width/2, 24, black, title)
	// Legend.
	lx := left
	for i, name := range slotNames {
		rect(lx, 44, lx+14, 58, slotColors[i])
		text(lx+20, 56, black, name)
		lx += 20 + textWidth(name) + 30
	}
	rect(lx, 50, lx+18, 53, black)
	text(lx+24, 56, black, "target")

	plotTop, plotBottom := top, height-bottom
	y := func(v float64) int {
		v = math.Min(v, chartCap)
		return plotBottom - int(math.Round(v/chartCap*float64(plotBottom-plotTop)))
	}
	for v := 0.0; v <= chartCap+1e-9; v += 0.5 {
		c := grid
		if v == 1 {
			c = color.RGBA{0x80, 0x80, 0x80, 0xff}
		}
		rect(left, y(v), width-right, y(v)+1, c)
		label := fmt.Sprintf("%.1fx", v)
		text(left-8-textWidth(label), y(v)+4, black, label)
	}
	rect(left, plotTop, left+1, plotBottom+1, black)
	rect(left, plotBottom, width-right, plotBottom+1, black)

	if len(groups) == 0 {
		return encodePNG(img)
	}
	groupWidth := float64(width-left-right) / float64(len(groups))
	slotWidth := groupWidth * 0.85 / 4
	for gi, g := range groups {
		gx := float64(left) + groupWidth*float64(gi) + groupWidth*0.075
		for _, b := range g.bars {
			x0 := int(gx + slotWidth*float64(b.slot) + slotWidth*0.1)
			x1 := int(gx + slotWidth*float64(b.slot+1) - slotWidth*0.1)
			rect(x0, y(b.value), x1, plotBottom, slotColors[b.slot])
			label := fmt.Sprintf("%.2f", b.value)
			if b.value >= 10 {
				label = fmt.Sprintf("%.0f", b.value)
			} else if b.value > chartCap {
				label = fmt.Sprintf("%.1f", b.value)
			}
			if b.value > chartCap {
				// Cut: a white notch shows the bar goes on.
				rect(x0, y(chartCap)+6, x1, y(chartCap)+9, color.White)
			}
			// The value above the bar, on white; the target mark is drawn
			// over it, so that a value just under its target does not
			// hide the mark.
			lw := textWidth(label)
			ly := y(b.value) - 4
			rect((x0+x1)/2-lw/2-1, ly-11, (x0+x1)/2+lw/2+2, ly+2, color.White)
			centered((x0+x1)/2, ly, black, label)
			if b.target > 0 {
				ty := y(b.target)
				rect(x0-3, ty-1, x1+3, ty+2, black)
			}
		}
		cx := int(gx + slotWidth*2)
		centered(cx, plotBottom+20, black, g.label)
	}
	text(left, height-30, black, "Speed relative to OpenSSH = OpenSSH's time / the path's time, or the path's rate / OpenSSH's rate (memory, CPU: OpenSSH's / pgrelay's).")
	text(left, height-12, black, "Medians of the repetitions in docs/benchmarks.txt. Higher is better.")
	return encodePNG(img)
}

func encodePNG(img image.Image) ([]byte, error) {
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
