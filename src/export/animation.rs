//! Animated GIF and APNG, one frame per step, looping, with an optional hold on the last frame.

use std::io::Write;

use image::RgbaImage;

/// Frame delays in milliseconds: 1/fps each, the last one extended by `hold_seconds`.
pub fn delays_ms(frames: usize, fps: f64, hold_seconds: f64) -> Vec<u32> {
    let base = (1000.0 / fps.clamp(0.1, 100.0)).round() as u32;
    let mut d = vec![base; frames];
    if let Some(last) = d.last_mut() {
        *last += (hold_seconds.max(0.0) * 1000.0).round() as u32;
    }
    d
}

/// Encodes an animated GIF with one palette for the whole animation, so a colour never
/// flickers between frames the way per-frame palettes make it: exact when all frames
/// together use at most 256 colours (every gray run does), else NeuQuant trained on pixels
/// of every frame.
pub fn encode_gif(frames: &[RgbaImage], delays: &[u32], out: &mut impl Write) -> Result<(), String> {
    let (w, h) = frames.first().map(|f| (f.width(), f.height())).ok_or("no frames to encode")?;
    let (w16, h16) = (
        u16::try_from(w).map_err(|_| "frame too wide for GIF")?,
        u16::try_from(h).map_err(|_| "frame too tall for GIF")?,
    );
    let palette = Palette::of(frames);
    let mut enc = gif::Encoder::new(out, w16, h16, &palette.rgb()).map_err(|e| e.to_string())?;
    enc.set_repeat(gif::Repeat::Infinite).map_err(|e| e.to_string())?;
    for (f, &ms) in frames.iter().zip(delays) {
        let indices: Vec<u8> = f.pixels().map(|p| palette.index(p.0)).collect();
        let mut frame =
            gif::Frame { width: w16, height: h16, buffer: std::borrow::Cow::Owned(indices), ..gif::Frame::default() };
        frame.delay = ((ms + 5) / 10).min(u16::MAX as u32) as u16;
        enc.write_frame(&frame).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The one palette of an animation.
enum Palette {
    /// Every colour the frames use, at most 256.
    Exact(Vec<[u8; 3]>, std::collections::HashMap<[u8; 3], u8>),
    /// NeuQuant trained on up to ~256k pixels taken evenly from all frames.
    Quantised(color_quant::NeuQuant),
}

impl Palette {
    fn of(frames: &[RgbaImage]) -> Self {
        let mut colours: Vec<[u8; 3]> = Vec::new();
        let mut index = std::collections::HashMap::new();
        for p in frames.iter().flat_map(|f| f.pixels()) {
            let c = [p[0], p[1], p[2]];
            if let std::collections::hash_map::Entry::Vacant(slot) = index.entry(c) {
                if colours.len() == 256 {
                    return Self::quantised(frames);
                }
                slot.insert(colours.len() as u8);
                colours.push(c);
            }
        }
        Self::Exact(colours, index)
    }

    fn quantised(frames: &[RgbaImage]) -> Self {
        let total: usize = frames.iter().map(|f| f.as_raw().len() / 4).sum();
        let stride = total.div_ceil(1 << 18).max(1);
        let sample: Vec<u8> = frames
            .iter()
            .flat_map(|f| f.as_raw().chunks_exact(4))
            .step_by(stride)
            .flat_map(|p| [p[0], p[1], p[2], 255])
            .collect();
        Self::Quantised(color_quant::NeuQuant::new(10, 256, &sample))
    }

    /// R, G, B per entry, padded to a power of two as GIF wants.
    fn rgb(&self) -> Vec<u8> {
        let mut rgb: Vec<u8> = match self {
            Self::Exact(colours, _) => colours.iter().flatten().copied().collect(),
            Self::Quantised(q) => q.color_map_rgb(),
        };
        let entries = (rgb.len() / 3).max(2).next_power_of_two();
        rgb.resize(entries * 3, 0);
        rgb
    }

    fn index(&self, p: [u8; 4]) -> u8 {
        match self {
            Self::Exact(_, index) => index[&[p[0], p[1], p[2]]],
            Self::Quantised(q) => q.index_of(&[p[0], p[1], p[2], 255]) as u8,
        }
    }
}

/// Encodes an animated PNG (lossless).
pub fn encode_apng(frames: &[RgbaImage], delays: &[u32], out: &mut impl Write) -> Result<(), String> {
    let (w, h) = frames.first().map(|f| (f.width(), f.height())).ok_or("no frames to encode")?;
    let mut enc = png::Encoder::new(out, w, h);
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_animated(frames.len() as u32, 0).map_err(|e| e.to_string())?;
    let mut writer = enc.write_header().map_err(|e| e.to_string())?;
    for (f, &ms) in frames.iter().zip(delays) {
        // In hundredths of a second, so a long hold (up to 655 s) fits the u16 numerator.
        writer.set_frame_delay(((ms + 5) / 10).min(u16::MAX as u32) as u16, 100).map_err(|e| e.to_string())?;
        writer.write_image_data(f.as_raw()).map_err(|e| e.to_string())?;
    }
    writer.finish().map_err(|e| e.to_string())
}
