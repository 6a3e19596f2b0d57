//! Bar charts drawn on the node as SVG shapes (no script, no style attribute: the page's CSS
//! colours them), with each bar's value as text so the chart reads without colour.

/// One bar.
pub(crate) struct Bar {
    pub(crate) x: u32,
    pub(crate) y: u32,
    pub(crate) width: u32,
    pub(crate) height: u32,
    /// The period under the bar.
    pub(crate) label: String,
    /// The value above it.
    pub(crate) value: String,
    /// Where the label and value are centred.
    pub(crate) mid: u32,
}

/// A bar chart.
pub(crate) struct Chart {
    pub(crate) title: String,
    pub(crate) width: u32,
    pub(crate) height: u32,
    /// The baseline's height from the top.
    pub(crate) base: u32,
    pub(crate) bars: Vec<Bar>,
}

/// Plot height, and the room above (values) and below (labels) it.
const PLOT: u32 = 160;
const TOP: u32 = 20;
const BOTTOM: u32 = 36;
/// Width a bar takes, with its gap.
const STEP: u32 = 56;
const BAR: u32 = 36;

/// A chart of `points` (label, value, value as text), scaled to the largest value.
pub(crate) fn bars(title: String, points: &[(String, f64, String)]) -> Chart {
    let max = points.iter().map(|p| p.1).fold(0.0_f64, f64::max);
    let bars = points
        .iter()
        .enumerate()
        .map(|(i, (label, v, text))| {
            let height = if max > 0.0 {
                ((v / max) * f64::from(PLOT)).round() as u32
            } else {
                0
            };
            let x = 8 + STEP * i as u32;
            Bar {
                x,
                y: TOP + PLOT - height,
                width: BAR,
                height,
                label: label.clone(),
                value: text.clone(),
                mid: x + BAR / 2,
            }
        })
        .collect();
    Chart {
        title,
        width: 16 + STEP * points.len() as u32,
        height: TOP + PLOT + BOTTOM,
        base: TOP + PLOT,
        bars,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_value_fills_the_plot_and_zero_draws_nothing() {
        let c = bars(
            "t".into(),
            &[
                ("a".into(), 0.0, "0".into()),
                ("b".into(), 5.0, "5".into()),
                ("c".into(), 10.0, "10".into()),
            ],
        );
        assert_eq!(c.bars[0].height, 0);
        assert_eq!(c.bars[1].height, PLOT / 2);
        assert_eq!(c.bars[2].height, PLOT);
        assert_eq!(c.bars[2].y, TOP);
        assert!(c.bars[2].x + c.bars[2].width < c.width);
    }
}
