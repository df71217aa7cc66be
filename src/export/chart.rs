//! Figures a reader can read without the README: line charts with a title, titled axes with
//! units, ticks and a legend, drawn with plotters into a pixel buffer and encoded as PNG.
//! Used by `calibrate` (P against t), `train` (the loss curve) and `compare --figure`.

use std::sync::OnceLock;

use plotters::prelude::*;
use plotters_backend::{BackendColor, BackendCoord, DrawingErrorKind};

/// One line of a chart.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub colour: [u8; 3],
    /// Drawn as steps (a value holds until the next point), as a patch size per step is.
    pub steps: bool,
}

/// A line chart: title, axis titles (with units) and the series, over the given ranges.
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_range: (f64, f64),
    pub y_range: (f64, f64),
    /// The y axis on a log scale (the loss).
    pub y_log: bool,
    pub series: Vec<Series>,
    pub size: (u32, u32),
    /// The legend's corner, where the lines are not.
    pub legend: Corner,
}

/// Where a chart's legend sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Corner {
    UpperLeft,
    UpperRight,
    LowerRight,
}

/// The font family every chart uses, registered once from egui's bundled Ubuntu Light.
const FAMILY: &str = "sans-serif";

fn fonts() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        plotters::style::register_font(FAMILY, FontStyle::Normal, epaint_default_fonts::UBUNTU_LIGHT)
            .map_err(|_| "the chart font does not parse".to_string())
    })
    .clone()
}

impl Chart {
    /// The chart as PNG bytes.
    pub fn png(&self) -> Result<Vec<u8>, String> {
        fonts()?;
        let (w, h) = self.size;
        let mut buf = vec![255u8; (w * h * 3) as usize];
        self.draw(&mut buf).map_err(|e| format!("drawing the chart '{}': {e}", self.title))?;
        let img = image::RgbImage::from_raw(w, h, buf).expect("the buffer is w×h×3");
        let mut bytes = Vec::new();
        image::DynamicImage::ImageRgb8(img)
            .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
            .map_err(|e| e.to_string())?;
        Ok(bytes)
    }

    fn draw(&self, buf: &mut [u8]) -> Result<(), String> {
        let root = Bitmap(BitMapBackend::with_buffer(buf, self.size)).into_drawing_area();
        root.fill(&WHITE).map_err(text)?;
        let (x0, x1) = self.x_range;
        let (y0, y1) = self.y_range;
        let mut builder = ChartBuilder::on(&root);
        builder.caption(&self.title, (FAMILY, 20)).margin(12).x_label_area_size(44).y_label_area_size(56);
        let style = |series: &Series| RGBColor(series.colour[0], series.colour[1], series.colour[2]);
        let points = |series: &Series| -> Vec<(f64, f64)> {
            if !series.steps {
                return series.points.clone();
            }
            let mut out = Vec::with_capacity(series.points.len() * 2);
            for (i, &(x, y)) in series.points.iter().enumerate() {
                out.push((x, y));
                if let Some(&(nx, _)) = series.points.get(i + 1) {
                    out.push((nx, y));
                }
            }
            out
        };
        let (xf, yf) = (tick_format(x1 - x0), tick_format(y1 - y0));
        // The mesh, lines and legend on either y axis (the two are different types).
        macro_rules! lines {
            ($chart:expr, $y_format:expr, $y_light:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .y_max_light_lines($y_light)
                    .x_desc(&self.x_label)
                    .y_desc(&self.y_label)
                    .label_style((FAMILY, 14))
                    .axis_desc_style((FAMILY, 15))
                    .x_label_formatter(&|v| xf(*v))
                    .y_label_formatter(&$y_format)
                    .draw()
                    .map_err(text)?;
                for s in &self.series {
                    let colour = style(s);
                    chart
                        .draw_series(LineSeries::new(points(s), colour.stroke_width(2)))
                        .map_err(text)?
                        .label(&s.name)
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2)));
                }
                legend(&mut chart, self.legend).map_err(text)?;
            }};
        }
        // A log axis marks only powers of ten: over less than a decade and a half it would
        // show one tick or none, so a narrow range stays linear.
        // Over a wider range plotters also marks 2, 3, … 9 times each power, with float noise
        // ("3.0000000000000004e-1") and a light line each: a loss from 3 down to 0.05 came out
        // as a grey band of overprinted labels. Only the powers of ten are labelled, and the
        // light lines go.
        if self.y_log && y1 > 30.0 * y0 && y0 > 0.0 {
            lines!(builder.build_cartesian_2d(x0..x1, (y0..y1).log_scale()).map_err(text)?, log_label, 0);
        } else {
            lines!(builder.build_cartesian_2d(x0..x1, y0..y1).map_err(text)?, |v: &f64| yf(*v), 10);
        }
        root.present().map_err(text)?;
        Ok(())
    }
}

/// plotters' bitmap backend with text drawn glyph by glyph at each glyph's own position. Its
/// ab_glyph text puts every glyph's box at the caret, dropping the side bearing: a j, whose
/// hook reaches left of its caret, landed on the i after it, and "emoji" read "emoj".
/// Everything else is the bitmap backend's; the text keeps plotters' layout box and baseline.
struct Bitmap<'a>(BitMapBackend<'a>);

impl<'a> DrawingBackend for Bitmap<'a> {
    type ErrorType = <BitMapBackend<'a> as DrawingBackend>::ErrorType;
    fn get_size(&self) -> (u32, u32) {
        self.0.get_size()
    }
    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.ensure_prepared()
    }
    fn present(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.present()
    }
    fn draw_pixel(&mut self, p: BackendCoord, c: BackendColor) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_pixel(p, c)
    }
    fn draw_line<S: plotters_backend::BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_line(from, to, style)
    }
    fn draw_rect<S: plotters_backend::BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_rect(upper_left, bottom_right, style, fill)
    }
    fn draw_path<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_path(path, style)
    }
    fn draw_circle<S: plotters_backend::BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_circle(center, radius, style, fill)
    }
    fn fill_polygon<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.fill_polygon(vert, style)
    }
    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.blit_bitmap(pos, size, src)
    }
    fn draw_text<T: plotters_backend::BackendTextStyle>(
        &mut self,
        text: &str,
        style: &T,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        use plotters_backend::text_anchor::{HPos, VPos};
        let colour = style.color();
        if colour.alpha == 0.0 {
            return Ok(());
        }
        let ((min_x, min_y), (max_x, max_y)) =
            style.layout_box(text).map_err(|e| DrawingErrorKind::FontError(Box::new(e)))?;
        let (width, height) = (max_x - min_x, max_y - min_y);
        let dx = match style.anchor().h_pos {
            HPos::Left => 0,
            HPos::Right => -width,
            HPos::Center => -width / 2,
        };
        let dy = match style.anchor().v_pos {
            VPos::Top => 0,
            VPos::Center => -height / 2,
            VPos::Bottom => -height,
        };
        let size = style.size() as f32;
        // plotters' baseline: half the size below the box's top.
        let mut ink = Vec::new();
        super::font::glyph_coverage(text, size, size / 2.0, |x, y, c| ink.push((x, y, c)));
        let (w, h) = self.get_size();
        let turn = style.transform();
        for (x, y, c) in ink {
            let (x, y) = turn.transform(x + dx - min_x, y + dy - min_y);
            let (x, y) = (pos.0 + x, pos.1 + y);
            if x >= 0 && x < w as i32 && y >= 0 && y < h as i32 {
                self.0.draw_pixel((x, y), BackendColor { alpha: colour.alpha * c as f64, rgb: colour.rgb })?;
            }
        }
        Ok(())
    }
}

/// A log axis's tick label: "1e-1" at a power of ten, nothing between.
fn log_label(v: &f64) -> String {
    let e = v.log10();
    if (e - e.round()).abs() < 1e-6 { format!("1e{}", e.round() as i32) } else { String::new() }
}

fn legend<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    corner: Corner,
) -> Result<(), String> {
    let position = match corner {
        Corner::UpperLeft => SeriesLabelPosition::UpperLeft,
        Corner::UpperRight => SeriesLabelPosition::UpperRight,
        Corner::LowerRight => SeriesLabelPosition::LowerRight,
    };
    chart
        .configure_series_labels()
        .position(position)
        .label_font((FAMILY, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(text)?;
    Ok(())
}

/// Tick labels with as many decimals as an axis spanning `span` needs: whole numbers from a
/// span of 10 up (patch sizes, steps), two significant digits below.
fn tick_format(span: f64) -> impl Fn(f64) -> String {
    let decimals = if span >= 10.0 { 0 } else { (1.0 - span.max(1e-9).log10().floor()).max(0.0) as usize };
    move |v| format!("{v:.decimals$}")
}

fn text<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How wide the ink of `text` spreads, in pixels, drawn 20 px high (a chart title's size)
    /// on white.
    fn ink(text: &str) -> usize {
        fonts().unwrap();
        let mut buf = vec![255u8; 120 * 80 * 3];
        {
            let style = TextStyle::from((FAMILY, 20).into_font()).color(&BLACK);
            Bitmap(BitMapBackend::with_buffer(&mut buf, (120, 80))).draw_text(text, &style, (20, 20)).unwrap();
        }
        // Columns with ink, left to right.
        let inked: Vec<usize> = (0..120).filter(|&x| (0..80).any(|y| buf[(y * 120 + x) * 3] < 128)).collect();
        inked.last().map_or(0, |r| r + 1 - inked[0])
    }

    /// A glyph whose ink starts left of its caret (the j's hook) does not land on the next
    /// one: the i of "ji" inks to the right of the j. (plotters' own text put it on the j's
    /// stem: "ji" spread 5 px, as "j" and "i" apart, against 8 px here.)
    #[test]
    fn each_glyph_keeps_its_side_bearing() {
        let (j, i, ji) = (ink("j"), ink("i"), ink("ji"));
        assert!(j >= 3 && i >= 1, "both glyphs ink: j {j} px wide, i {i}");
        assert!(ji > j + i, "ji spreads {ji} px against j {j} + i {i}");
    }

    /// A chart decodes at its size, draws each series in its colour, and puts dark text in
    /// the axis margins (tick labels and axis titles) and above the plot (the title).
    #[test]
    fn a_chart_has_its_series_axes_and_title() {
        let chart = Chart {
            title: "test chart".into(),
            x_label: "t (diffusion time)".into(),
            y_label: "P (pixels)".into(),
            x_range: (0.0, 1.0),
            y_range: (0.0, 10.0),
            y_log: false,
            series: vec![
                Series { name: "up".into(), points: vec![(0.0, 1.0), (1.0, 9.0)], colour: [220, 50, 40], steps: false },
                Series {
                    name: "steps".into(),
                    points: vec![(0.0, 5.0), (0.5, 3.0), (1.0, 3.0)],
                    colour: [40, 90, 200],
                    steps: true,
                },
            ],
            size: (480, 320),
            legend: Corner::UpperLeft,
        };
        let png = chart.png().unwrap();
        let img = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (480, 320));
        let count = |c: [u8; 3]| img.pixels().filter(|p| p.0 == c).count();
        assert!(count([220, 50, 40]) > 100 && count([40, 90, 200]) > 100, "both series drawn");
        let dark = |x0: u32, x1: u32, y0: u32, y1: u32| {
            (x0..x1)
                .flat_map(|x| (y0..y1).map(move |y| (x, y)))
                .filter(|&(x, y)| img.get_pixel(x, y).0[0] < 100)
                .count()
        };
        assert!(dark(0, 60, 40, 280) > 50, "y tick labels and title");
        assert!(dark(60, 480, 280, 320) > 50, "x tick labels and title");
        assert!(dark(150, 330, 0, 30) > 20, "the chart's title");
        // Only powers of ten carry a label on a log axis.
        assert_eq!(log_label(&0.1), "1e-1");
        assert_eq!(log_label(&1.0), "1e0");
        assert_eq!(log_label(&(0.1 + 0.2)), "");
        assert_eq!(log_label(&0.9), "");
        // The log axis (a loss falling over three decades) draws too.
        let log = Chart {
            y_log: true,
            y_range: (0.001, 2.0),
            series: vec![Series {
                name: "loss".into(),
                points: (1..200).map(|i| (i as f64 / 200.0, 1.0 / i as f64)).collect(),
                colour: [40, 90, 200],
                steps: false,
            }],
            ..chart
        };
        let img = image::load_from_memory(&log.png().unwrap()).unwrap().to_rgb8();
        assert!(img.pixels().filter(|p| p.0 == [40, 90, 200]).count() > 100, "the log-scale line");
    }
}
