//! Stage 1: bytes of an uploaded file -> upright 8-bit RGB pixels.
//!
//! Formats: JPEG (baseline, progressive, CMYK/YCCK), PNG (8/16-bit, alpha, palette), WebP,
//! BMP, GIF (first frame) and TIFF. EXIF orientation is applied (DeepStack ignored it, so
//! phone photos were seen sideways). The pixel count is checked from the header before any
//! pixel is decoded, and the decoder's allocations are capped as a second line of defence.
//!
//! A large JPEG is decoded at a reduced scale (1/2, 1/4 or 1/8, in the inverse DCT, by
//! `jpeg-decoder`) when the result still has as many pixels as the later stages can use: a
//! 12 MP camera photo becomes 2000x1500 for a 640-pixel detector, a quarter of the memory
//! and about half the time of a full decode. [`Photo`] keeps the uploaded size, so boxes and
//! landmarks are reported in the uploaded photo's pixels.

use std::io::Cursor;

use image::{ImageDecoder, ImageReader, RgbImage};

/// Default cap on decoded pixels: 50 megapixels covers every phone and camera photo.
pub const DEFAULT_MAX_PIXELS: u64 = 50_000_000;

/// Why an upload could not be turned into pixels.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Zero bytes.
    #[error("the file is empty")]
    Empty,
    /// The magic bytes are not those of a supported image format.
    #[error("not a supported image format")]
    UnknownFormat,
    /// The header announces more pixels than allowed; nothing was decoded.
    #[error("image of {width}x{height} pixels is over the limit of {limit} pixels")]
    TooManyPixels {
        /// Width from the header.
        width: u32,
        /// Height from the header.
        height: u32,
        /// The configured limit.
        limit: u64,
    },
    /// The header is zero-sized.
    #[error("image has no pixels")]
    NoPixels,
    /// Truncated or corrupt data, or a feature the decoder does not support.
    #[error("cannot decode image: {0}")]
    Corrupt(String),
}

/// Limits applied while decoding.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Largest width x height accepted.
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_pixels: DEFAULT_MAX_PIXELS,
        }
    }
}

/// Decoded pixels, upright, and the size of the photo as uploaded (also upright).
#[derive(Debug, Clone)]
pub struct Photo {
    pixels: RgbImage,
    width: u32,
    height: u32,
}

impl Photo {
    /// The uploaded photo's width and height (after EXIF orientation).
    pub fn dimensions(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// The decoded pixels: the whole photo, at full or reduced scale.
    pub fn pixels(&self) -> &RgbImage {
        &self.pixels
    }

    /// Uploaded pixels per decoded pixel: 1, or the inverse DCT's 2, 4 or 8. Taken on the
    /// longer side, which a reduced decode keeps long enough for the ratio to round exactly.
    pub fn scale(&self) -> f32 {
        let (decoded_w, decoded_h) = self.pixels.dimensions();
        let decoded = decoded_w.max(decoded_h).max(1);
        (self.width.max(self.height) as f32 / decoded as f32).round()
    }
}

/// A photo decoded at full scale (test images, frames built in memory).
impl From<RgbImage> for Photo {
    fn from(pixels: RgbImage) -> Photo {
        let (width, height) = pixels.dimensions();
        Photo {
            pixels,
            width,
            height,
        }
    }
}

/// Decode `bytes` into upright RGB (EXIF orientation applied, grey and alpha flattened), at
/// full scale.
pub fn decode(bytes: &[u8], limits: DecodeLimits) -> Result<RgbImage, DecodeError> {
    Ok(decode_photo(bytes, limits, u32::MAX)?.pixels)
}

/// Decode `bytes` like [`decode`], at a reduced scale if the photo is a JPEG whose longer side
/// stays at least `keep_long_side` pixels.
pub fn decode_photo(
    bytes: &[u8],
    limits: DecodeLimits,
    keep_long_side: u32,
) -> Result<Photo, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    if reader.format().is_none() {
        return Err(DecodeError::UnknownFormat);
    }
    let is_jpeg = reader.format() == Some(image::ImageFormat::Jpeg);
    if is_jpeg && !jpeg_has_end(bytes) {
        // zune-jpeg fills a cut-off scan with grey and reports success; a half photo
        // must be refused, not detected on.
        return Err(DecodeError::Corrupt(
            "truncated JPEG (no end-of-image marker)".into(),
        ));
    }
    let mut decoder = reader.into_decoder().map_err(corrupt)?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(DecodeError::NoPixels);
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(DecodeError::TooManyPixels {
            width,
            height,
            limit: limits.max_pixels,
        });
    }
    let mut alloc = image::Limits::default();
    // 16-bit RGBA is the widest buffer a decoder fills (8 bytes a pixel), plus slack for its
    // own tables.
    alloc.max_alloc = Some(limits.max_pixels * 8 + (64 << 20));
    alloc.max_image_width = Some(width);
    alloc.max_image_height = Some(height);
    decoder.set_limits(alloc.clone()).map_err(corrupt)?;
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let reduced = match reduced_scale(width, height, keep_long_side) {
        Some(divisor) if is_jpeg => decode_jpeg_reduced(bytes, divisor, &alloc)?,
        _ => None,
    };
    let mut img = match reduced {
        Some(rgb) => image::DynamicImage::ImageRgb8(rgb),
        None => image::DynamicImage::from_decoder(decoder).map_err(corrupt)?,
    };
    img.apply_orientation(orientation);
    let pixels = match img {
        image::DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.to_rgb8(),
    };
    use image::metadata::Orientation;
    let turned = matches!(
        orientation,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    );
    let (width, height) = if turned {
        (height, width)
    } else {
        (width, height)
    };
    Ok(Photo {
        pixels,
        width,
        height,
    })
}

/// The most memory decoding `bytes` at `keep_long_side` (see [`decode_photo`]) holds at once,
/// estimated from the header alone: the decoder's buffer in its own pixel format plus the RGB
/// copy (a reduced-scale JPEG: its RGB output and one copy). `None` when the header cannot be
/// read or the image is over `limits` (the decode then fails without allocating pixels).
pub fn decode_peak_bytes(bytes: &[u8], limits: DecodeLimits, keep_long_side: u32) -> Option<u64> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .ok()?;
    let is_jpeg = reader.format() == Some(image::ImageFormat::Jpeg);
    let decoder = reader.into_decoder().ok()?;
    let (width, height) = decoder.dimensions();
    let pixels = |w: u32, h: u32| u64::from(w) * u64::from(h);
    if pixels(width, height) > limits.max_pixels {
        return None;
    }
    Some(match reduced_scale(width, height, keep_long_side) {
        Some(d) if is_jpeg => pixels(width.div_ceil(d), height.div_ceil(d)) * 6,
        _ => pixels(width, height) * (u64::from(decoder.color_type().bytes_per_pixel()) + 3),
    })
}

/// The largest inverse-DCT divisor (2, 4 or 8) that keeps the longer side at least
/// `keep_long_side` pixels, if any.
fn reduced_scale(width: u32, height: u32, keep_long_side: u32) -> Option<u32> {
    let long = width.max(height);
    [8, 4, 2]
        .into_iter()
        .find(|divisor| long.div_ceil(*divisor) >= keep_long_side)
}

/// A JPEG decoded at 1/`divisor` of its size, or `None` for the kinds `jpeg-decoder` gives in
/// another pixel format (CMYK, 16-bit): those take the full-scale path.
fn decode_jpeg_reduced(
    bytes: &[u8],
    divisor: u32,
    alloc: &image::Limits,
) -> Result<Option<RgbImage>, DecodeError> {
    use jpeg_decoder::PixelFormat;
    let corrupt = |e: jpeg_decoder::Error| DecodeError::Corrupt(e.to_string());
    let mut decoder = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    if let Some(max) = alloc.max_alloc {
        decoder.set_max_decoding_buffer_size(usize::try_from(max).unwrap_or(usize::MAX));
    }
    decoder.read_info().map_err(corrupt)?;
    let info = decoder.info().ok_or(DecodeError::NoPixels)?;
    if !matches!(info.pixel_format, PixelFormat::RGB24 | PixelFormat::L8) {
        return Ok(None);
    }
    let (width, height) = decoder
        .scale(
            info.width.div_ceil(divisor as u16),
            info.height.div_ceil(divisor as u16),
        )
        .map_err(corrupt)?;
    let pixels = decoder.decode().map_err(corrupt)?;
    let (width, height) = (u32::from(width), u32::from(height));
    let rgb = match info.pixel_format {
        PixelFormat::L8 => pixels.iter().flat_map(|&v| [v, v, v]).collect(),
        _ => pixels,
    };
    RgbImage::from_raw(width, height, rgb)
        .map(Some)
        .ok_or_else(|| DecodeError::Corrupt("JPEG decoder returned a short buffer".into()))
}

/// Whether a JPEG has an end-of-image marker after its first scan.
///
/// The marker segments before the first scan are skipped by their lengths, so an EXIF
/// thumbnail (a whole JPEG inside APP1, with its own end marker) cannot stand in for the
/// main image's. Bytes after the end marker (some cameras append data) are allowed.
fn jpeg_has_end(bytes: &[u8]) -> bool {
    let mut i = 2; // after SOI
    while i + 4 <= bytes.len() {
        if bytes[i] != 0xFF {
            return false;
        }
        let marker = bytes[i + 1];
        if marker == 0xFF {
            i += 1; // fill byte
            continue;
        }
        let len = usize::from(u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]));
        if marker == 0xDA {
            // Start of scan: entropy-coded data follows; the image ends with FF D9.
            return bytes[i + 2..].windows(2).any(|w| w == [0xFF, 0xD9]);
        }
        i += 2 + len;
    }
    false
}

fn corrupt(e: image::ImageError) -> DecodeError {
    match e {
        image::ImageError::Unsupported(u)
            if matches!(
                u.kind(),
                image::error::UnsupportedErrorKind::Format(image::error::ImageFormatHint::Unknown)
            ) =>
        {
            DecodeError::UnknownFormat
        }
        other => DecodeError::Corrupt(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reduced_scale_keeps_the_longer_side() {
        assert_eq!(reduced_scale(4000, 3000, 1280), Some(2));
        assert_eq!(reduced_scale(3000, 4000, 832), Some(4));
        assert_eq!(reduced_scale(1920, 1080, 1280), None);
        assert_eq!(reduced_scale(20000, 100, 1280), Some(8));
        // A narrow panorama: its short side alone would round the scale wrong (100 / 13).
        let photo = Photo {
            pixels: RgbImage::new(2500, 13),
            width: 20000,
            height: 100,
        };
        assert_eq!(photo.scale(), 8.0);
    }

    #[test]
    fn empty_and_garbage_are_typed_errors() {
        let limits = DecodeLimits::default();
        assert!(matches!(decode(b"", limits), Err(DecodeError::Empty)));
        assert!(matches!(
            decode(b"hello, this is text", limits),
            Err(DecodeError::UnknownFormat)
        ));
        // A JPEG start-of-image marker and nothing else.
        assert!(matches!(
            decode(&[0xFF, 0xD8, 0xFF], limits),
            Err(DecodeError::Corrupt(_))
        ));
    }
}
