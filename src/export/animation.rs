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

/// Encodes an animated GIF. Gray frames get an exact 256-level palette; colour frames are
/// quantised per frame.
pub fn encode_gif(frames: &[RgbaImage], delays: &[u32], out: &mut impl Write) -> Result<(), String> {
    let (w, h) = frames.first().map(|f| (f.width(), f.height())).ok_or("no frames to encode")?;
    let (w16, h16) = (
        u16::try_from(w).map_err(|_| "frame too wide for GIF")?,
        u16::try_from(h).map_err(|_| "frame too tall for GIF")?,
    );
    let gray = frames.iter().all(|f| f.pixels().all(|p| p[0] == p[1] && p[1] == p[2]));
    let palette: Vec<u8> = (0..=255u8).flat_map(|g| [g, g, g]).collect();
    let mut enc = gif::Encoder::new(out, w16, h16, if gray { &palette } else { &[] }).map_err(|e| e.to_string())?;
    enc.set_repeat(gif::Repeat::Infinite).map_err(|e| e.to_string())?;
    for (f, &ms) in frames.iter().zip(delays) {
        let mut frame = if gray {
            gif::Frame {
                width: w16,
                height: h16,
                buffer: std::borrow::Cow::Owned(f.pixels().map(|p| p[0]).collect()),
                ..gif::Frame::default()
            }
        } else {
            let mut rgba = f.as_raw().clone();
            gif::Frame::from_rgba_speed(w16, h16, &mut rgba, 10)
        };
        frame.delay = ((ms + 5) / 10).min(u16::MAX as u32) as u16;
        enc.write_frame(&frame).map_err(|e| e.to_string())?;
    }
    Ok(())
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
        writer.set_frame_delay(ms.min(u16::MAX as u32) as u16, 1000).map_err(|e| e.to_string())?;
        writer.write_image_data(f.as_raw()).map_err(|e| e.to_string())?;
    }
    writer.finish().map_err(|e| e.to_string())
}
