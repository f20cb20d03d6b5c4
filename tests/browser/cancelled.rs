//! A payment cancelled at the gateway's cashier (the protocol sends no cancel notify):
//! the order offers "Pay now" only while it can still be paid, reads Expired after its
//! time with no dead button, and the admin's re-check of the unpaid trade is amber.

use fantoccini::Locator;

use super::Session;

pub async fn a_cancelled_payment_expires_honestly(s: &Session) {
    // The admin (signed in at this point) starts buying and cancels at the cashier.
    s.go("/packages").await;
    s.click(".buy-credit").await;
    for _ in 0..50 {
        if s.path().await.starts_with("/sandbox/epay/cashier/") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    s.click("#sandbox-cancel").await;
    // The cashier sends the buyer back to the plain return address (no order in it).
    s.wait_path("/packages").await;
    s.go("/orders").await;
    let row = s.text("#orders-table tbody tr").await;
    assert!(row.contains("Awaiting payment"), "{row}");
    assert!(
        s.c.find(Locator::Css("#orders-table tbody tr:first-child .pay-now")).await.is_ok(),
        "payable until its deadline"
    );
    let otn = s.text("#orders-table tbody tr:first-child code").await;
    s.shot("50-cancelled-still-payable").await;

    // Past the order's time to pay (15 minutes) nothing can pay it any more.
    s.app.clock.advance(chrono::Duration::minutes(16));
    s.go("/orders").await;
    let row = s.text("#orders-table tbody tr").await;
    assert!(row.contains(&otn) && row.contains("Expired"), "{row}");
    assert!(s.c.find(Locator::Css("#orders-table .pay-now")).await.is_err(), "no dead Pay now");
    s.shot("51-cancelled-expired-orders").await;

    // The operator's re-check asks the gateway: not paid, in amber, never green.
    s.go("/admin/orders").await;
    s.click(&format!("form[action='/admin/orders/{otn}/check'] button")).await;
    let notice = s.c.wait().for_element(Locator::Css("#notice")).await.unwrap();
    assert_eq!(notice.attr("data-tone").await.unwrap().as_deref(), Some("warn"), "{}", notice.text().await.unwrap());
    assert!(notice.text().await.unwrap().contains(&otn));
    s.shot("52-cancelled-admin-recheck-amber").await;
}
