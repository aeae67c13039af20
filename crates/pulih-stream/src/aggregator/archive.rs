//! The optional raw archive (`aggregate.archive_payments`): the
//! `payments` row of a counted record.

use pulih_store::PaymentRow;

use pulih_event::calendar;

/// The `payments` row of a record; `None` when it does not parse as a
/// payment record.
pub(super) fn payment_row(
    payload: &[u8],
    partition: i32,
    offset: i64,
    ts_ms: i64,
) -> Option<PaymentRow> {
    let r = pulih_event::PaymentRecord::from_json(payload).ok()?;
    let mut merchant_key = [0u8; 32];
    hex::decode_to_slice(&r.merchant_key, &mut merchant_key).ok()?;
    let ms = r.occurred_at.unix_millis();
    Some(PaymentRow {
        producer_id: r.producer_id,
        event_id: r.event_id,
        occurred_at: u32::try_from(ms.div_euclid(1000)).ok()?,
        occurred_ms: ms.rem_euclid(1000) as u16,
        day: u16::try_from(calendar::day_of(ms)).ok()?,
        merchant_key,
        merchant_key_id: r.merchant_key_id,
        district_code: r.district_code,
        sector: r.sector.as_str().to_owned(),
        kbli_code: r.kbli_code.unwrap_or_default(),
        amount_idr: r.amount_idr,
        channel: r.channel.as_str().to_owned(),
        merchant_size: r.merchant_size.as_str().to_owned(),
        accepted_at: u32::try_from(ts_ms.div_euclid(1000)).unwrap_or(0),
        source_partition: partition,
        source_offset: offset,
    })
}
